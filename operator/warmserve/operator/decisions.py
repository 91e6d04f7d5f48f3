"""The scheduler's decisions as records people read: one per replica the plan loads, serves, stops serving
or drops, with the worker it is on and the forecast and demand that drove it (docs/operator.md, "Events").

:func:`decision_records` is a pure function of the snapshot a plan was decided from and the plan; the
operator's Kubernetes adapter writes each record as an Event, and its metrics count them. KV lending
(``LendKV``, ``ReclaimKV``) moves every tick a serving replica's load changes and decides nothing a person
acts on: it has no record (the metrics count it among the plan's actions).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from warmserve.operator.planning.plan import Action, ColdStart, Demote, Evict, Plan, Prewarm, Promote
from warmserve.operator.planning.snapshot import Snapshot

#: The reason of each recorded action, CamelCase as Kubernetes Event reasons are.
REASONS: dict[type, str] = {
    Prewarm: "Prewarm",
    ColdStart: "ColdStart",
    Promote: "Promote",
    Demote: "Demote",
    Evict: "Evict",
}


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One decision: its ``reason`` (a key of :data:`REASONS`' values), the model (its served name), the
    replica and the worker it is on (on a cluster, the worker Pod's name), and ``message``: what was done
    and why, with the model's forecast and demand at the time."""

    reason: str
    model: str
    replica_id: str
    worker: str
    message: str


def decision_records(snapshot: Snapshot, plan: Plan) -> list[DecisionRecord]:
    """The records of ``plan``'s recorded actions, in plan order. An action naming a replica the snapshot
    does not hold (the plan would not apply) keeps an empty worker rather than fail: records only describe."""
    workers = {r.id: r.worker for r in snapshot.replicas}
    instances = Counter(r.model for r in snapshot.replicas if r.is_instance)
    records = []
    for action in plan:
        reason = REASONS.get(type(action))
        if reason is None:
            continue
        worker = (
            action.worker if isinstance(action, Prewarm | ColdStart) else workers.get(action.replica_id, "")
        )
        context = _context(snapshot, action.model, instances[action.model])
        message = f"{_what(action, worker)}: {action.reason} ({context})"
        records.append(DecisionRecord(reason, action.model, action.replica_id, worker, message))
    return records


def _what(action: Action, worker: str) -> str:
    """What the action does, in words."""
    where = f"replica {action.replica_id} of {action.model} on worker {worker or '(unknown)'}"
    if isinstance(action, Prewarm):
        lent = " in lent KV space" if action.borrowed else ""
        return f"prewarm {where}{lent}, score {action.score:.3g}"
    if isinstance(action, ColdStart):
        return f"cold start {where}"
    if isinstance(action, Promote):
        return f"promote {where} to serving"
    if isinstance(action, Demote):
        return f"demote {where} to prewarmed"
    return f"evict {where}"


def _context(snapshot: Snapshot, model: str, instances: int) -> str:
    """The model's forecast (if any) and demand at the snapshot's time, and its ``instances``."""
    demand = snapshot.demand_of(model)
    forecast = snapshot.forecasts.get(model)
    seen = f"forecast peak {forecast.peak:.3g} mean {forecast.mean:.3g}" if forecast else "no forecast"
    return (
        f"{seen}, demand {demand.inflight:.3g} in flight {demand.queued} queued, "
        f"{instances} instances before this plan"
    )
