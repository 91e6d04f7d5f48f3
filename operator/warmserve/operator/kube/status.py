"""The status of each resource, from what the operator observed: pure functions of plain data.

A ``ModelDeployment``'s status comes from its :class:`~warmserve.operator.kube.registry.Verdict` and the
scheduler's last snapshot (replicas by state, the forecast it planned with) and last cold start; a
``WorkerPool``'s from its Pods as the API server lists them. Conditions follow the Kubernetes convention
(``Ready``, ``Progressing``, ``Degraded``, each with ``observedGeneration``, a CamelCase reason and a
message); a condition keeps its ``lastTransitionTime`` while its status does not change (docs/operator.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from warmserve.operator.kube.cluster import NotReporting, worker_report
from warmserve.operator.kube.registry import ColdStartRecord, Verdict
from warmserve.operator.planning.snapshot import Snapshot
from warmserve.operator.resources import WorkerPool
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.pods import Pod
from warmserve.protocol.state import ReplicaState

Status = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition as decided now: ``status`` is ``True``, ``False`` or ``None`` (Unknown)."""

    type: str
    status: bool | None
    reason: str
    message: str


def timestamp(epoch_s: float) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes times."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(
    decided: Iterable[Condition], generation: int, now: float, previous: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The status conditions for ``decided``; each keeps its previous ``lastTransitionTime`` if its
    status is the same as before, else takes ``now``."""
    before = {c.get("type"): c for c in previous}
    out = []
    for c in decided:
        status = "Unknown" if c.status is None else str(c.status)
        old = before.get(c.type)
        since = old["lastTransitionTime"] if old and old.get("status") == status else timestamp(now)
        out.append(
            {
                "type": c.type,
                "status": status,
                "observedGeneration": generation,
                "lastTransitionTime": since,
                "reason": c.reason,
                "message": c.message,
            }
        )
    return out


def changed(old: Mapping[str, Any], new: Status) -> Status:
    """The keys of ``new`` whose values differ from ``old``'s: what a status merge patch must send."""
    return {key: value for key, value in new.items() if old.get(key) != value}


@dataclass(frozen=True, slots=True)
class ReplicaCounts:
    """A model's replicas over every worker: serving requests, holding weights only, on their way (loading
    weights, or promoting into serving)."""

    serving: int = 0
    prewarmed: int = 0
    loading: int = 0


def replica_counts(snapshot: Snapshot, model: str) -> ReplicaCounts:
    """Count ``model``'s replicas in ``snapshot`` by state (draining and failed ones count in none)."""
    states = [r.state for r in snapshot.replicas if r.model == model]
    return ReplicaCounts(
        serving=states.count(ReplicaState.SERVING),
        prewarmed=states.count(ReplicaState.PREWARMED),
        loading=states.count(ReplicaState.LOADING) + states.count(ReplicaState.PROMOTING),
    )


def model_status(
    verdict: Verdict,
    generation: int,
    snapshot: Snapshot | None,
    cold_start: ColdStartRecord | None,
    now: float,
    previous: Mapping[str, Any],
) -> Status:
    """A ModelDeployment's status (``previous``: the status it carries now, for transition times)."""
    status: Status = {"observedGeneration": generation}
    deployment = verdict.deployment
    if deployment is not None:
        status["servedName"] = deployment.spec.name
        status["selector"] = deployment.selector()
    counts = ReplicaCounts()
    if deployment is not None and snapshot is not None and verdict.served:
        counts = replica_counts(snapshot, deployment.spec.name)
        forecast = snapshot.forecasts.get(deployment.spec.name)
        if forecast is not None:
            status["lastForecast"] = last_forecast(
                forecast.mean, forecast.peak, snapshot.now, previous.get("lastForecast") or {}
            )
    status["replicas"] = {"serving": counts.serving, "prewarmed": counts.prewarmed, "loading": counts.loading}
    if cold_start is not None:
        status["lastColdStart"] = {"time": timestamp(cold_start.time), "reason": cold_start.reason[:1024]}
    decided = _model_conditions(verdict, snapshot, counts)
    status["conditions"] = conditions(decided, generation, now, previous.get("conditions") or [])
    return status


def last_forecast(mean: float, peak: float, now: float, previous: Mapping[str, Any]) -> dict[str, Any]:
    """``status.lastForecast``: the forecast and when it was first made. A forecast that repeats the
    previous one keeps the previous time: rewriting the time alone at every status interval would cost the
    API server a status write per ModelDeployment and interval (docs/operator.md, "Status cadence")."""
    if previous.get("mean") == mean and previous.get("peak") == peak and previous.get("time"):
        return {"mean": mean, "peak": peak, "time": previous["time"]}
    return {"mean": mean, "peak": peak, "time": timestamp(now)}


def _model_conditions(verdict: Verdict, snapshot: Snapshot | None, counts: ReplicaCounts) -> list[Condition]:
    if not verdict.served:
        return [
            Condition("Ready", False, "InvalidSpec", verdict.error),
            Condition("Progressing", False, "InvalidSpec", "not scheduled until the spec is fixed"),
            Condition("Degraded", True, "InvalidSpec", verdict.error),
        ]
    assert verdict.deployment is not None  # served implies parsed
    floor = verdict.deployment.floor
    healthy = Condition("Degraded", False, "AsExpected", "the model is scheduled")
    if snapshot is None:
        waiting = "the scheduler has not observed the cluster yet"
        return [
            Condition("Ready", None, "NotObserved", waiting),
            Condition("Progressing", None, "NotObserved", waiting),
            healthy,
        ]
    said = f"{counts.serving} serving, {counts.prewarmed} prewarmed, {counts.loading} loading; floor {floor}"
    ready = (
        Condition("Ready", True, "Serving", said)
        if counts.serving >= floor
        else (Condition("Ready", False, "BelowFloor", said))
    )
    moving = counts.loading > 0 or counts.serving < floor
    progressing = Condition("Progressing", moving, "ScalingUp" if moving else "Stable", said)
    return [ready, progressing, healthy]


@dataclass(frozen=True, slots=True)
class PoolCounts:
    """A pool's Pods (those existing, those ready) and, over the ready ones that report, GPUs and pool
    bytes."""

    pods: int = 0
    ready: int = 0
    gpus: int = 0
    bytes_used: int = 0
    bytes_free: int = 0


def pool_counts(pods: Iterable[Pod]) -> PoolCounts:
    """Count a pool's Pods; a ready Pod with no valid report yet adds no GPUs."""
    pods = [p for p in pods if p["metadata"].get("deletionTimestamp") is None]
    ready = [p for p in pods if _ready(p)]
    gpus = used = capacity = 0
    for pod in ready:
        try:
            report = worker_report(pod)
        except (NotReporting, InvalidFieldError):
            continue
        gpus += len(report.gpus)
        used += sum(g.used_bytes for g in report.gpus)
        capacity += sum(g.capacity_bytes for g in report.gpus)
    return PoolCounts(len(pods), len(ready), gpus, used, capacity - used)


def _ready(pod: Pod) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pool_status(
    pool: WorkerPool | None,
    error: str,
    generation: int,
    pods: Iterable[Pod],
    now: float,
    previous: Mapping[str, Any],
) -> Status:
    """A WorkerPool's status: ``pool`` as parsed (``None`` with ``error`` naming the field if it did not
    parse) and its Pods as listed."""
    counts = pool_counts(pods)
    status: Status = {
        "observedGeneration": generation,
        "pods": counts.pods,
        "podsReady": counts.ready,
        "gpus": counts.gpus,
        "poolBytesUsed": counts.bytes_used,
        "poolBytesFree": counts.bytes_free,
    }
    if pool is None:
        decided = [
            Condition("Ready", False, "InvalidSpec", error),
            Condition("Progressing", False, "InvalidSpec", "no Pods changed until the spec is fixed"),
            Condition("Degraded", True, "InvalidSpec", error),
        ]
    else:
        status["selector"] = pool.selector()
        said = f"{counts.ready} of {pool.pods} worker Pods ready ({counts.pods} exist)"
        done = counts.ready == pool.pods == counts.pods
        decided = [
            Condition(
                "Ready",
                counts.ready >= pool.pods,
                "PodsReady" if counts.ready >= pool.pods else "PodsNotReady",
                said,
            ),
            Condition("Progressing", not done, "Reconciling" if not done else "Stable", said),
            Condition("Degraded", False, "AsExpected", "the spec is valid"),
        ]
    status["conditions"] = conditions(decided, generation, now, previous.get("conditions") or [])
    return status
