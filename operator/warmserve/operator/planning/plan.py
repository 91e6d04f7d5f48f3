"""A plan: the typed actions one planning step decides, each with the reason it was taken.

Actions are data, not calls: the scheduler turns the snapshot they lead to into per-worker desired
states (:mod:`warmserve.operator.planning.desired`), the simulator replays them, and logs show every reason.
:func:`apply_plan` says what a plan means: the snapshot the cluster reaches once it is carried out
(loading completes at once). Actions apply in plan order, so an eviction that makes room comes before
the placement that needs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from warmserve.operator.planning.snapshot import Replica, Snapshot, SnapshotError
from warmserve.protocol.state import ReplicaState, Role


@dataclass(frozen=True, slots=True)
class Prewarm:
    """Load a replica's weights into free pool memory (or into KV space lent there, if ``borrowed``)."""

    replica_id: str
    model: str
    worker: str
    gpus: tuple[int, ...]
    score: float
    borrowed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ColdStart:
    """Load a replica and serve it: the scale-out of last resort, when no prewarmed replica exists."""

    replica_id: str
    model: str
    worker: str
    gpus: tuple[int, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Promote:
    """Serve a prewarmed (or still loading) replica from the weights already in its slot."""

    replica_id: str
    model: str
    reason: str


@dataclass(frozen=True, slots=True)
class Demote:
    """Scale in: stop serving, give the KV cache back, keep the weights as a prewarmed replica."""

    replica_id: str
    model: str
    reason: str


@dataclass(frozen=True, slots=True)
class Evict:
    """Drop a replica that is not serving and give its memory back to the pool."""

    replica_id: str
    model: str
    reason: str


@dataclass(frozen=True, slots=True)
class LendKV:
    """A serving replica lends more of its free KV space: ``lent_bytes`` per GPU from now on."""

    replica_id: str
    model: str
    lent_bytes: int
    reason: str


@dataclass(frozen=True, slots=True)
class ReclaimKV:
    """A serving replica takes lent KV space back: ``lent_bytes`` per GPU remain lent."""

    replica_id: str
    model: str
    lent_bytes: int
    reason: str


Action = Prewarm | ColdStart | Promote | Demote | Evict | LendKV | ReclaimKV


@dataclass(frozen=True, slots=True)
class Plan:
    """The actions of one planning step, in the order they must be carried out."""

    actions: tuple[Action, ...] = ()

    def __iter__(self) -> Iterator[Action]:
        return iter(self.actions)

    def __len__(self) -> int:
        return len(self.actions)

    def describe(self) -> str:
        """One line per action: its kind, replica and reason (for logs and the CLI)."""
        return "\n".join(f"{type(a).__name__} {a.replica_id}: {a.reason}" for a in self.actions)


def replica_id(model: str, worker: str, gpus: tuple[int, ...], taken: set[str]) -> str:
    """The id of a new replica: readable (``model@worker:g0-g1``), with ``#n`` appended if taken, so it is
    unique among the ids already taken; the id is added to ``taken``. Every policy names replicas so."""
    base = f"{model}@{worker}:{'-'.join(map(str, gpus))}"
    rid, n = base, 1
    while rid in taken:
        n += 1
        rid = f"{base}#{n}"
    taken.add(rid)
    return rid


def apply_plan(snapshot: Snapshot, plan: Plan) -> Snapshot:
    """The snapshot once ``plan`` is carried out, loading and promotion completing instantly.

    Raises :class:`SnapshotError` if an action names a replica that does not exist (or already does),
    or if the result is inconsistent (over-committed memory, two replicas of one model on a GPU...).
    """
    replicas: dict[str, Replica] = {r.id: r for r in snapshot.replicas}
    for i, action in enumerate(plan.actions):
        _apply(snapshot, replicas, action, f"plan.actions[{i}]")
    return snapshot.with_replicas(tuple(replicas.values()))


def _apply(snapshot: Snapshot, replicas: dict[str, Replica], action: Action, where: str) -> None:
    if isinstance(action, Prewarm | ColdStart):
        if action.replica_id in replicas:
            raise SnapshotError(f"{where}.replica_id", "an id not yet in the cluster", action.replica_id)
        replicas[action.replica_id] = _new_replica(snapshot, action)
        return
    if action.replica_id not in replicas:
        raise SnapshotError(f"{where}.replica_id", "the id of a replica in the cluster", action.replica_id)
    replica = replicas[action.replica_id]
    if isinstance(action, Evict):
        del replicas[action.replica_id]
    elif isinstance(action, Promote):
        replicas[replica.id] = _serving(snapshot, replica)
    elif isinstance(action, Demote):
        _demote(snapshot, replicas, replica)
    else:
        replicas[replica.id] = replica.evolve(kv_lent_bytes=action.lent_bytes)


def _new_replica(snapshot: Snapshot, action: Prewarm | ColdStart) -> Replica:
    replica = Replica(
        id=action.replica_id,
        model=action.model,
        worker=action.worker,
        gpus=action.gpus,
        state=ReplicaState.PREWARMED,
        role=Role.PREWARM,
        since=snapshot.now,
        borrowed=isinstance(action, Prewarm) and action.borrowed,
    )
    return _serving(snapshot, replica) if isinstance(action, ColdStart) else replica


def _serving(snapshot: Snapshot, replica: Replica) -> Replica:
    worker = snapshot.worker(replica.worker)
    capacity = min(worker.capacity(g) for g in replica.gpus)
    return as_serving(replica, capacity - snapshot.models[replica.model].spec.shard_bytes, snapshot.now)


def as_serving(replica: Replica, kv_total_bytes: int, now: float) -> Replica:
    """The replica once serving: it owns ``kv_total_bytes`` per GPU as KV cache (all its weights leave
    free), nothing used or lent yet."""
    return replica.evolve(
        state=ReplicaState.SERVING,
        role=Role.SERVE,
        since=now,
        progress=1.0,
        inflight=0,
        kv_total_bytes=max(kv_total_bytes, 0),
        kv_used_bytes=0,
        kv_lent_bytes=0,
        borrowed=False,
    )


def as_prewarmed(replica: Replica, now: float) -> Replica:
    """The replica once demoted: weights kept in place, KV cache given back."""
    return replica.evolve(
        state=ReplicaState.PREWARMED,
        role=Role.PREWARM,
        since=now,
        inflight=0,
        kv_total_bytes=0,
        kv_used_bytes=0,
        kv_lent_bytes=0,
    )


def _demote(snapshot: Snapshot, replicas: dict[str, Replica], replica: Replica) -> None:
    """Back to prewarmed; replicas borrowing its lent KV space now simply sit in the free pool."""
    replicas[replica.id] = as_prewarmed(replica, snapshot.now)
    mine = set(replica.gpus)
    for other in list(replicas.values()):
        if other.borrowed and other.worker == replica.worker and mine.intersection(other.gpus):
            replicas[other.id] = other.evolve(borrowed=False)
