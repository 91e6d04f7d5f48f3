"""The ``autoscale`` baseline: reactive scale-from-zero in the manner of ServerlessLLM (Fu et al.,
"ServerlessLLM: Low-Latency Serverless Inference for Large Language Models", OSDI 2024).

What it does, each tick:

- the same reactive rule as WarmServe's layer underneath (:func:`target_instances` on the smoothed
  in-flight load, a request for a model with no instance scales it out at once), so the two differ only
  in what a scale-out costs; without its scale-in window, which is WarmServe's and not ServerlessLLM's:
  the keep-alive alone delays a scale-in;
- a scale-out is always a cold start (engine start + full weight load): no prewarming, no promotion;
- startup-time-aware server choice: the worker where the checkpoint sits in the fastest tier is chosen,
  and on it any idle GPUs (ServerlessLLM asks its cluster manager for N free GPUs of one server; no
  aligned block, so kept-alive single-GPU instances fragment nothing). A worker that held a replica of
  the model within ``host_cache_s`` keeps the checkpoint in host DRAM (ServerlessLLM's multi-tier
  checkpoint store), so loading there is bounded by the host link, not the disk; ties go to the first
  worker, and its lowest-numbered idle GPUs are taken;
- keep-alive: an instance leaves only after ``keep_alive_s`` with nothing in flight, and only while the
  model has more instances than the reactive rule asks for; then it is dropped whole (GPU memory freed,
  nothing kept prewarmed), down to zero. Nothing else frees GPUs: as in ServerlessLLM's scheduler, a
  model that finds none idle waits for a keep-alive to expire (its live migration only moves instances
  to servers with free GPUs, so it frees nothing when the cluster is full).

What it does not model: ServerlessLLM's live migration of running inferences between servers, and its
loading-time estimator's queueing of loads per disk (the simulated worker's load paths account for that).
Failure or missing data: failed replicas are evicted; when no idle GPU set fits, the scale-out waits for
a later tick.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from warmserve.operator.planning.occupancy import Occupancy
from warmserve.operator.planning.placement import PlacementConfig, serving_need
from warmserve.operator.planning.plan import Action, ColdStart, Evict, Plan, replica_id
from warmserve.operator.planning.reactive import (
    ReactiveConfig,
    ReactiveState,
    observe,
    recent_peaks,
    target_instances,
)
from warmserve.operator.planning.snapshot import Replica, Snapshot, SnapshotError
from warmserve.operator.policies.cleanup import evict_non_instances
from warmserve.protocol.state import ReplicaState, Role


def _no_scale_in_window() -> ReactiveConfig:
    """WarmServe's reactive constants without the scale-in window: ServerlessLLM's auto-scaler compares
    the requests in flight now with its instances and lets an idle one go after ``keep_alive`` alone.
    With the window (kept for WarmServe's switching thrash) every idle instance held its GPU 10 s more,
    so ``autoscale-no-keep-alive`` was a 10 s keep-alive and left requests unserved when GPUs were short
    (docs/baselines.md)."""
    return ReactiveConfig(scale_in_window_s=0.0)


@dataclass(frozen=True, slots=True)
class AutoscaleConfig:
    """``keep_alive_s``: idle seconds before an instance is dropped, the only delay of a scale-in (the
    ``reactive`` rule has no scale-in window by default). ``host_cache_s``: seconds a worker keeps a
    checkpoint in host DRAM after its last replica of the model was there."""

    keep_alive_s: float = 60.0
    host_cache_s: float = 600.0
    reactive: ReactiveConfig = field(default_factory=_no_scale_in_window)
    placement: PlacementConfig = field(default_factory=PlacementConfig)

    def __post_init__(self) -> None:
        for name in ("keep_alive_s", "host_cache_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SnapshotError(f"autoscale.{name}", "a finite number >= 0", value)


@dataclass(frozen=True, slots=True)
class AutoscaleState:
    """The reactive window; since when each instance has been idle; where each model was last resident
    (``(model, worker)`` -> time), which says whose host DRAM still holds its checkpoint."""

    scaler: ReactiveState = field(default_factory=ReactiveState)
    idle_since: Mapping[str, float] = field(default_factory=dict)
    resident: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "idle_since", MappingProxyType(dict(self.idle_since)))
        object.__setattr__(self, "resident", MappingProxyType(dict(self.resident)))


def autoscale_step(
    snapshot: Snapshot, state: AutoscaleState, config: AutoscaleConfig
) -> tuple[Plan, AutoscaleState]:
    """One tick of the baseline: evict failures, drop instances idle past keep-alive, cold-start the rest."""
    now = snapshot.now
    loads, scaler = observe(state.scaler, snapshot, config.reactive)
    peaks = recent_peaks(scaler, config.reactive)
    resident = {k: t for k, t in state.resident.items() if now - t <= config.host_cache_s}
    resident.update({(r.model, r.worker): now for r in snapshot.replicas})
    idle = _idle_since(snapshot, state.idle_since)
    occ = Occupancy(snapshot, {})
    actions = evict_non_instances(snapshot, occ)
    taken = {r.id for r in snapshot.replicas}
    for name in sorted(snapshot.models, key=lambda m: (-snapshot.models[m].priority, m)):
        model = snapshot.models[name]
        current = [occ.replicas[rid] for rid in sorted(occ.of_model[name])]
        demand, peak = snapshot.demand_of(name), peaks[name]
        target = target_instances(model, loads[name], demand, len(current), config.reactive, peak)
        if target.instances < len(current):
            actions.extend(_expire(occ, current, len(current) - target.instances, idle, now, config))
        for _ in range(target.instances - len(current)):
            start = _cold_start(occ, name, resident, taken, target.reason, config)
            if start is None:
                break
            actions.append(start)
    return Plan(tuple(actions)), AutoscaleState(scaler, idle, resident)


def _idle_since(snapshot: Snapshot, before: Mapping[str, float]) -> dict[str, float]:
    """Serving instances with nothing in flight, and since when; a busy or new one starts at zero."""
    return {
        r.id: before.get(r.id, snapshot.now)
        for r in snapshot.replicas
        if r.is_instance and r.state is ReplicaState.SERVING and r.inflight == 0
    }


def _expire(
    occ: Occupancy,
    current: list[Replica],
    count: int,
    idle: Mapping[str, float],
    now: float,
    config: AutoscaleConfig,
) -> list[Action]:
    """Drop up to ``count`` instances idle for at least ``keep_alive_s``, longest idle first."""
    expired = sorted(
        (r for r in current if r.id in idle and now - idle[r.id] >= config.keep_alive_s),
        key=lambda r: (idle[r.id], r.id),
    )
    actions: list[Action] = []
    for replica in expired[:count]:
        occ.remove(replica.id)
        idle_s = now - idle[replica.id]
        why = f"idle {idle_s:.0f} s >= keep-alive {config.keep_alive_s:.0f} s: scale in, free it"
        actions.append(Evict(replica.id, replica.model, why))
    return actions


def _cold_start(
    occ: Occupancy,
    model: str,
    resident: Mapping[tuple[str, str], float],
    taken: set[str],
    reason: str,
    config: AutoscaleConfig,
) -> ColdStart | None:
    """A cold start on the worker with the fastest start-up (host-DRAM tier first, then worker order),
    on its lowest-numbered idle GPUs with room for the weights: ServerlessLLM asks for any N free GPUs of
    one server, not an aligned block. ``None`` if no worker has enough of them."""
    spec = occ.models[model].spec
    need = serving_need(spec, config.placement)
    best: tuple[tuple[bool, int], tuple[str, tuple[int, ...]]] | None = None
    for windex, node in enumerate(occ.workers):
        keys = [(node.name, g.index) for g in sorted(node.gpus, key=lambda g: g.index)]
        idle = tuple(g for w, g in keys if not occ.on_gpu[(w, g)] and occ.capacity[(w, g)] >= need)
        key = ((model, node.name) not in resident, windex)
        if len(idle) >= spec.tensor_parallel and (best is None or key < best[0]):
            best = (key, (node.name, idle[: spec.tensor_parallel]))
    if best is None:
        return None
    worker, gpus = best[1]
    rid = replica_id(model, worker, gpus, taken)
    tier = "host DRAM" if not best[0][0] else "disk"
    start = ColdStart(rid, model, worker, gpus, f"{reason or model + ': scale out'}: cold start from {tier}")
    occ.add(Replica(rid, model, worker, gpus, ReplicaState.LOADING, Role.SERVE, occ.now))
    return start
