"""How many replicas of a model to keep prewarmed, and how much each one is worth (docs/planning.md).

With B requests per instance and I instances running, a forecast (mean, peak concurrency over the
horizon) asks for ``nf = max(ceil(mean/B) - I, 0)`` *foundation* replicas (needed on average) and
``nb = max(ceil(peak/B) - I - nf, 0)`` *burst* replicas (needed at the peak). The replica of rank i
(0 = the first to be promoted) scores ``priority × cold_start_s × exp(-i/(nf+nb))``, burst replicas
also × peak/mean but never above the last foundation replica (scores never rise with rank): what a
replica is worth is the cold start it saves, discounted by how unlikely it is to be used. A model
without a forecast asks for no prewarmed replica (it is served reactively), and every prewarmed
replica beyond its demand scores 0: kept while memory is free, evicted first.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from warmserve.operator.planning.snapshot import ModelConfig, Replica, Snapshot
from warmserve.protocol.state import ReplicaState


@dataclass(frozen=True, slots=True)
class ScoreConfig:
    """Constants of the scoring rule.

    ``burst_mean_floor``: the mean concurrency below which the burst factor peak/mean uses this
    value instead, so a model idle on average but with a forecast peak gets a large, finite factor.
    """

    burst_mean_floor: float = 1.0


@dataclass(frozen=True, slots=True)
class ReplicaDemand:
    """How many prewarmed replicas a model's forecast asks for, and why (for plan reasons)."""

    foundation: int
    burst: int
    mean: float
    peak: float
    instances: int

    @property
    def total(self) -> int:
        return self.foundation + self.burst

    def kind(self, rank: int) -> str:
        return "foundation" if rank < self.foundation else "burst"


def replica_demand(model: ModelConfig, mean: float, peak: float, instances: int) -> ReplicaDemand:
    """Foundation and burst replica counts, capped so instances plus replicas never exceed max_instances."""
    return _replica_demand(model.spec.max_concurrency, model.max_instances, mean, peak, instances)


@functools.lru_cache(maxsize=4096, typed=True)
def _replica_demand(b: int, max_instances: int, mean: float, peak: float, instances: int) -> ReplicaDemand:
    """:func:`replica_demand` from the only model fields it reads. Cached: every model's demand is
    asked for several times a tick, and forecasts and instance counts change far less often; the
    result is immutable, so sharing it is safe."""
    foundation = max(math.ceil(mean / b) - instances, 0)
    burst = max(math.ceil(peak / b) - instances - foundation, 0)
    room = max(max_instances - instances, 0)
    foundation = min(foundation, room)
    burst = min(burst, room - foundation)
    return ReplicaDemand(foundation, burst, mean, peak, instances)


def rank_score(model: ModelConfig, demand: ReplicaDemand, rank: int, config: ScoreConfig) -> float:
    """Score of the prewarmed replica of ``rank``; 0 for a rank beyond the demand (a surplus replica)."""
    if rank >= demand.total:
        return 0.0
    score = model.priority * model.cold_start_s * math.exp(-rank / demand.total)
    if rank >= demand.foundation:
        score *= demand.peak / max(demand.mean, config.burst_mean_floor)
        if demand.foundation:
            # promoted only after every foundation replica, a burst replica is never worth more than
            # they are: greedy placement (and evicting by score) relies on scores falling with rank
            score = min(score, rank_score(model, demand, demand.foundation - 1, config))
    return score


def prewarm_order(replica: Replica) -> tuple[bool, float, str]:
    """Rank order of a model's prewarmed replicas: loaded before loading, then oldest first (stable)."""
    return (replica.state is not ReplicaState.PREWARMED, replica.since, replica.id)


def model_demands(snapshot: Snapshot) -> dict[str, ReplicaDemand]:
    """The replica demand of every model with a forecast, given the instances in ``snapshot``."""
    instances = instance_counts(snapshot)
    return {
        name: replica_demand(snapshot.models[name], f.mean, f.peak, instances.get(name, 0))
        for name, f in snapshot.forecasts.items()
    }


def instance_counts(snapshot: Snapshot) -> dict[str, int]:
    """Serving instances per model (replicas with role serve, loading or not, that have not failed)."""
    counts: dict[str, int] = {}
    for replica in snapshot.replicas:
        if replica.is_instance:
            counts[replica.model] = counts.get(replica.model, 0) + 1
    return counts


def prewarm_scores(snapshot: Snapshot, config: ScoreConfig) -> dict[str, float]:
    """Score of every prewarmed (or loading) replica in ``snapshot``, by replica id."""
    demands = model_demands(snapshot)
    by_model: dict[str, list[Replica]] = {}
    for replica in snapshot.replicas:
        if replica.is_prewarm:
            by_model.setdefault(replica.model, []).append(replica)
    scores: dict[str, float] = {}
    for name, replicas in by_model.items():
        scores.update(_ranked(snapshot.models[name], demands.get(name), replicas, config))
    return scores


def _ranked(
    model: ModelConfig, demand: ReplicaDemand | None, replicas: list[Replica], config: ScoreConfig
) -> Mapping[str, float]:
    ordered = sorted(replicas, key=prewarm_order)
    if demand is None:
        return {r.id: 0.0 for r in ordered}
    return {r.id: rank_score(model, demand, rank, config) for rank, r in enumerate(ordered)}
