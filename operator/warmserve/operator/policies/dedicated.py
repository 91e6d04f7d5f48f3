"""The ``dedicated`` baselines: static provisioning, each model on its own GPUs, never scaled
(the conventional deployment every serving paper compares with, e.g. AlpaServe's and
MuxServe's "dedicated" setups).

Each model gets ``ceil(expected concurrency / B)`` instances, the expected concurrency being the trace's
peak (``dedicated``) or mean (``dedicated-mean``) concurrency of that model, at least one. When the
cluster cannot hold them all, counts are cut in proportion (largest remainder, every model keeping one
as long as GPUs last, more popular models first). The instances are cold-started once, as GPUs allow,
and then never demoted, evicted or moved: requests beyond their capacity queue.

What it does not model: any re-provisioning during the day (an operator resizing by hand).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from warmserve.operator.planning.occupancy import Occupancy
from warmserve.operator.planning.placement import PlacementConfig, choose_cold
from warmserve.operator.planning.plan import ColdStart, Plan, replica_id
from warmserve.operator.planning.snapshot import ModelConfig, Replica, Snapshot, SnapshotError
from warmserve.operator.policies.cleanup import evict_non_instances
from warmserve.protocol.state import ReplicaState, Role


@dataclass(frozen=True, slots=True)
class DedicatedConfig:
    """``concurrency``: the expected concurrency each model is sized to (its peak or its mean)."""

    concurrency: Mapping[str, float]
    placement: PlacementConfig = field(default_factory=PlacementConfig)

    def __post_init__(self) -> None:
        for name, value in self.concurrency.items():
            if not (math.isfinite(value) and value >= 0):
                raise SnapshotError(f"dedicated.concurrency[{name!r}]", "a finite number >= 0", value)
        object.__setattr__(self, "concurrency", MappingProxyType(dict(self.concurrency)))


def instance_counts(
    models: Mapping[str, ModelConfig], concurrency: Mapping[str, float], gpus: int
) -> dict[str, int]:
    """Instances per model: sized to ``concurrency``, then cut to fit ``gpus`` GPUs in all."""
    wanted = {
        name: max(1, math.ceil(concurrency.get(name, 0.0) / m.spec.max_concurrency))
        for name, m in models.items()
    }
    cost = {name: models[name].spec.tensor_parallel for name in models}
    need = sum(wanted[n] * cost[n] for n in models)
    if need <= gpus:
        return wanted
    order = sorted(models, key=lambda n: (-concurrency.get(n, 0.0), n))
    counts = {n: 0 for n in models}
    left = gpus
    for name in order:  # one each first, most popular first
        if cost[name] <= left:
            counts[name], left = 1, left - cost[name]
    scale = left / max(sum((wanted[n] - counts[n]) * cost[n] for n in models), 1)
    shares = {n: (wanted[n] - counts[n]) * scale for n in models}
    for name in order:
        extra = min(int(shares[name]), left // cost[name])
        counts[name] += extra
        left -= extra * cost[name]
    for name in sorted(order, key=lambda n: (-(shares[n] - int(shares[n])), order.index(n))):
        if counts[name] < wanted[name] and cost[name] <= left:
            counts[name] += 1
            left -= cost[name]
    return counts


def dedicated_step(snapshot: Snapshot, state: None, config: DedicatedConfig) -> tuple[Plan, None]:
    """Cold-start whatever the static layout still lacks; evict failures; never scale in."""
    gpus = sum(len(w.gpus) for w in snapshot.workers)
    counts = instance_counts(snapshot.models, config.concurrency, gpus)
    occ = Occupancy(snapshot, {})
    actions = evict_non_instances(snapshot, occ)
    taken = {r.id for r in snapshot.replicas}
    for name in sorted(counts, key=lambda n: (-counts[n], n)):
        for _ in range(counts[name] - len(occ.of_model[name])):
            choice = choose_cold(occ, name, config.placement)
            if choice is None:
                break
            rid = replica_id(name, choice.worker, choice.gpus, taken)
            why = f"{name}: static layout of {counts[name]} instances"
            actions.append(ColdStart(rid, name, choice.worker, choice.gpus, why))
            occ.add(Replica(rid, name, choice.worker, choice.gpus, ReplicaState.LOADING, Role.SERVE, occ.now))
    return Plan(tuple(actions)), None
