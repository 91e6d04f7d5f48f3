"""What the scheduler observes of the cluster at one instant: the only input of a planning step.

A :class:`Snapshot` is plain immutable data: workers and their GPUs (pool capacity per GPU), the
replicas on them with their state and KV accounting, the models (spec, cold-start cost, bounds,
priority), the per-model forecast for the horizon and the gateway's current demand. Building one
validates it whole: an inconsistent snapshot (a replica on a GPU that does not exist, a negative size,
tensor parallelism wider than any worker, an unknown model, over-committed memory...) raises
:class:`SnapshotError` naming the first bad field and what was expected, so the planner never
produces a silently wrong plan from bad data.

Memory model (docs/planning.md): on a GPU without a serving replica, the weights of the replicas on it
share the pool (their sum must fit the capacity). A serving replica (the GPU's *owner*) owns all the
memory its weights leave free as KV cache, except ``kv_lent_bytes`` it lends to the pool; replicas
flagged ``borrowed`` sit in that lent space and their weights must fit in it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import ModelSpec, ReplicaState, Role

#: States in which a replica holds its GPUs as the serving owner (or is about to, or is leaving it).
OWNER_STATES = frozenset({ReplicaState.PROMOTING, ReplicaState.SERVING, ReplicaState.DRAINING})


class SnapshotError(InvalidFieldError):
    """A snapshot or planner config is inconsistent; ``field`` is its dotted path in the snapshot."""


@dataclass(frozen=True, slots=True)
class Gpu:
    """One GPU of a worker: its index on the worker and the bytes its memory pool may hold."""

    index: int
    capacity_bytes: int

    def __init__(self, index: int, capacity_bytes: int) -> None:  # written out: see Replica.__init__
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "capacity_bytes", capacity_bytes)


@dataclass(frozen=True, slots=True)
class Worker:
    """One universal worker (a node or GPU group); replicas never span two workers."""

    name: str
    gpus: tuple[Gpu, ...]

    def __init__(self, name: str, gpus: tuple[Gpu, ...]) -> None:  # written out: see Replica.__init__
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "gpus", gpus)

    def capacity(self, index: int) -> int:
        """Pool capacity of GPU ``index``; raises ``KeyError`` if the worker has no such GPU."""
        for gpu in self.gpus:
            if gpu.index == index:
                return gpu.capacity_bytes
        raise KeyError(index)


@dataclass(frozen=True, slots=True)
class Replica:
    """One replica as observed, plus the role the scheduler last gave it (``role``).

    ``role=SERVE`` marks an instance, whatever its state (a cold start is ``LOADING`` with role
    ``SERVE``). KV sizes are per GPU; ``kv_lent_bytes`` is what a serving replica lends to the pool.
    """

    id: str
    model: str
    worker: str
    gpus: tuple[int, ...]
    state: ReplicaState
    role: Role
    since: float = 0.0
    progress: float = 1.0
    inflight: int = 0
    kv_total_bytes: int = 0
    kv_used_bytes: int = 0
    kv_lent_bytes: int = 0
    borrowed: bool = False

    def __init__(
        self,
        id: str,
        model: str,
        worker: str,
        gpus: tuple[int, ...],
        state: ReplicaState,
        role: Role,
        since: float = 0.0,
        progress: float = 1.0,
        inflight: int = 0,
        kv_total_bytes: int = 0,
        kv_used_bytes: int = 0,
        kv_lent_bytes: int = 0,
        borrowed: bool = False,
    ) -> None:
        """The fields in order, as the generated ``__init__`` would take them. Written out because
        mypyc compiles this one to plain field stores, while the one :mod:`dataclasses` generates
        stays interpreted (mypyc/mypyc#817) and cost a quarter of a compiled simulation's time in the
        classes built every tick. ``tests/test_dataclass_inits.py`` holds every written-out
        ``__init__`` to its class's fields."""
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "worker", worker)
        object.__setattr__(self, "gpus", gpus)
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "role", role)
        object.__setattr__(self, "since", since)
        object.__setattr__(self, "progress", progress)
        object.__setattr__(self, "inflight", inflight)
        object.__setattr__(self, "kv_total_bytes", kv_total_bytes)
        object.__setattr__(self, "kv_used_bytes", kv_used_bytes)
        object.__setattr__(self, "kv_lent_bytes", kv_lent_bytes)
        object.__setattr__(self, "borrowed", borrowed)

    def evolve(
        self,
        *,
        state: ReplicaState | None = None,
        role: Role | None = None,
        since: float | None = None,
        progress: float | None = None,
        inflight: int | None = None,
        kv_total_bytes: int | None = None,
        kv_used_bytes: int | None = None,
        kv_lent_bytes: int | None = None,
        borrowed: bool | None = None,
    ) -> Replica:
        """A copy with the given fields changed (``None``: kept); its id, model, worker and GPUs never
        change. :func:`dataclasses.replace` for this class, typed so that mypyc compiles it: ``replace``
        itself stays interpreted, and planning calls it several times a tick."""
        return Replica(
            self.id,
            self.model,
            self.worker,
            self.gpus,
            self.state if state is None else state,
            self.role if role is None else role,
            self.since if since is None else since,
            self.progress if progress is None else progress,
            self.inflight if inflight is None else inflight,
            self.kv_total_bytes if kv_total_bytes is None else kv_total_bytes,
            self.kv_used_bytes if kv_used_bytes is None else kv_used_bytes,
            self.kv_lent_bytes if kv_lent_bytes is None else kv_lent_bytes,
            self.borrowed if borrowed is None else borrowed,
        )

    @property
    def is_owner(self) -> bool:
        """Whether it holds its GPUs as the serving replica (so nothing else may be promoted there)."""
        return self.role is Role.SERVE or self.state in OWNER_STATES

    @property
    def is_instance(self) -> bool:
        """Whether it counts as a serving instance of its model (I in docs/planning.md)."""
        return self.role is Role.SERVE and self.state is not ReplicaState.FAILED

    @property
    def is_prewarm(self) -> bool:
        """Whether it is a (possibly still loading) prewarmed replica that holds only weights."""
        return not self.is_owner and self.state in (ReplicaState.PREWARMED, ReplicaState.LOADING)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One model as the planner needs it: its spec plus cost, bounds and priority (from its deployment).

    The cold-start time of a replica is ``init_seconds + spec.shard_bytes / load_bandwidth_bytes_per_s``
    (prewarm scores rank replicas by it).
    """

    spec: ModelSpec
    load_bandwidth_bytes_per_s: float
    init_seconds: float = 0.0
    min_instances: int = 0
    max_instances: int = 1_000_000
    priority: float = 1.0
    slo_ttft_s: float = 0.0

    @property
    def cold_start_s(self) -> float:
        """Seconds from nothing to serving: engine init plus loading one GPU's shard."""
        return self.init_seconds + self.spec.shard_bytes / self.load_bandwidth_bytes_per_s


@dataclass(frozen=True, slots=True)
class Forecast:
    """Forecast concurrency of one model over the coming horizon: its mean and its peak."""

    mean: float
    peak: float


@dataclass(frozen=True, slots=True)
class Demand:
    """Current demand of one model at the gateway: requests in flight and requests held in its queue."""

    inflight: float
    queued: int = 0

    def __init__(self, inflight: float, queued: int = 0) -> None:  # written out: see Replica.__init__
        object.__setattr__(self, "inflight", inflight)
        object.__setattr__(self, "queued", queued)

    @property
    def total(self) -> float:
        return self.inflight + self.queued


#: The demand of a model with no entry (immutable, so one instance serves every lookup).
_NO_DEMAND = Demand(0.0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cluster at time ``now`` (seconds). Models without a forecast are served reactively only;
    models without a demand entry have none."""

    now: float
    workers: tuple[Worker, ...]
    models: Mapping[str, ModelConfig]
    replicas: tuple[Replica, ...]
    forecasts: Mapping[str, Forecast] = field(default_factory=dict)
    demand: Mapping[str, Demand] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("models", "forecasts", "demand"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        validate(self)

    def with_replicas(self, replicas: tuple[Replica, ...]) -> Snapshot:
        """This snapshot with ``replicas`` instead of its own (what a plan changes).

        Only the replicas and the GPUs they share are checked again: the workers, models, forecasts
        and demand are this snapshot's, validated when it was built and immutable since, and so are
        the fields of a replica object carried over from it (they were checked against the same
        workers and models). Raises :class:`SnapshotError` as the constructor would for the same
        replicas.
        """
        other = _unchecked(self.now, self.workers, self.models, replicas, self.forecasts, self.demand)
        _check_replicas(other, checked={id(r) for r in self.replicas})
        return other

    def revise(
        self,
        now: float,
        workers: tuple[Worker, ...],
        replicas: tuple[Replica, ...],
        forecasts: Mapping[str, Forecast],
        demand: Mapping[str, Demand],
    ) -> Snapshot:
        """The snapshot of this one's models at a later time (what a scheduler builds every tick).

        Checked for what can differ from this snapshot: ``now``, the forecasts and the demand always; the
        workers, and the models against them, unless the workers equal this snapshot's; a replica's own
        fields unless it is one of this snapshot's objects and the workers are equal (then it was checked
        against the same workers and models); ids and GPU sharing always. Raises :class:`SnapshotError`
        as the constructor would for the same fields.
        """
        other = _unchecked(
            now,
            workers,
            self.models,
            replicas,
            MappingProxyType(dict(forecasts)),
            MappingProxyType(dict(demand)),
        )
        validate(other, known=self if workers == self.workers else None)
        return other

    def worker(self, name: str) -> Worker:
        """The worker called ``name``; raises ``KeyError`` if there is none."""
        for worker in self.workers:
            if worker.name == name:
                return worker
        raise KeyError(name)

    def demand_of(self, model: str) -> Demand:
        """Demand of ``model``; none recorded means none."""
        return self.demand.get(model, _NO_DEMAND)


# --- validation: each check names the field it rejects -------------------------------------------


def _unchecked(
    now: float,
    workers: tuple[Worker, ...],
    models: Mapping[str, ModelConfig],
    replicas: tuple[Replica, ...],
    forecasts: Mapping[str, Forecast],
    demand: Mapping[str, Demand],
) -> Snapshot:
    """A snapshot of these fields, not validated: the caller checks what is new (its mappings must be
    read-only already)."""
    snapshot = Snapshot.__new__(Snapshot)  # not object.__new__: the mypyc-compiled class refuses that
    for name, value in (
        ("now", now),
        ("workers", workers),
        ("models", models),
        ("replicas", tuple(replicas)),
        ("forecasts", forecasts),
        ("demand", demand),
    ):
        object.__setattr__(snapshot, name, value)
    return snapshot


def validate(snapshot: Snapshot, known: Snapshot | None = None) -> None:
    """Raise :class:`SnapshotError` for the first inconsistency found; return quietly otherwise.

    ``known``: a validated snapshot with the same models and workers; its workers and models are not
    checked again, nor the own fields of its replica objects (the caller keeps it alive).
    """
    _check_number(snapshot.now, "now")
    if known is None:
        widest = _check_workers(snapshot.workers)
        _check_models(snapshot.models, widest)
    for name, forecast in snapshot.forecasts.items():
        where = f"forecasts[{name!r}]"
        _check_known(name, snapshot.models, where)
        _check_number(forecast.mean, where, ".mean")
        _check_number(forecast.peak, where, ".peak", minimum=forecast.mean, what="mean")
    for name, demand in snapshot.demand.items():
        where = f"demand[{name!r}]"
        _check_known(name, snapshot.models, where)
        _check_number(demand.inflight, where, ".inflight")
        _check_int(demand.queued, where, ".queued")
    _check_replicas(snapshot, checked=None if known is None else {id(r) for r in known.replicas})


def _check_number(value: float, *path: str, minimum: float = 0.0, what: str = "") -> None:
    """A finite number >= ``minimum``; the field's name is ``path`` joined, built only on failure
    (these checks run for every model and replica of every snapshot)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum:
        bound = f"the {what} ({minimum})" if what else f"{minimum}"
        raise SnapshotError("".join(path), f"a finite number >= {bound}", value)


def _check_int(value: int, *path: str, minimum: int = 0) -> None:
    """An integer (not a bool) >= ``minimum``; the field's name is ``path`` joined, as above."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SnapshotError("".join(path), f"an integer >= {minimum}", value)


def _check_known(name: str, models: Mapping[str, ModelConfig], where: str) -> None:
    if name not in models:
        raise SnapshotError(where, f"one of the declared models {sorted(models)}", name)


def _check_workers(workers: tuple[Worker, ...]) -> int:
    """Check names and GPUs; return the GPU count of the widest worker (the TP limit)."""
    seen: set[str] = set()
    for i, worker in enumerate(workers):
        if not worker.name or worker.name in seen:
            raise SnapshotError(f"workers[{i}].name", "a unique non-empty name", worker.name)
        seen.add(worker.name)
        if not worker.gpus:
            raise SnapshotError(f"workers[{i}].gpus", "at least one GPU", worker.gpus)
        indices: set[int] = set()
        for j, gpu in enumerate(worker.gpus):
            _check_int(gpu.index, f"workers[{i}].gpus[{j}].index")
            if gpu.index in indices:
                raise SnapshotError(
                    f"workers[{i}].gpus[{j}].index", "an index unique on the worker", gpu.index
                )
            indices.add(gpu.index)
            _check_int(gpu.capacity_bytes, f"workers[{i}].gpus[{j}].capacity_bytes", minimum=1)
    return max((len(w.gpus) for w in workers), default=0)


def _check_models(models: Mapping[str, ModelConfig], widest: int) -> None:
    for name, model in models.items():
        where = f"models[{name!r}]"
        if model.spec.name != name:
            raise SnapshotError(f"{where}.spec.name", f"the key {name!r}", model.spec.name)
        _check_int(model.spec.weight_bytes, where, ".spec.weight_bytes", minimum=1)
        _check_int(model.spec.max_concurrency, where, ".spec.max_concurrency", minimum=1)
        _check_int(model.spec.tensor_parallel, where, ".spec.tensor_parallel", minimum=1)
        if model.spec.tensor_parallel > widest:
            raise SnapshotError(
                f"{where}.spec.tensor_parallel",
                f"<= {widest} (the GPUs of the widest worker)",
                model.spec.tensor_parallel,
            )
        if not model.load_bandwidth_bytes_per_s > 0 or not math.isfinite(model.load_bandwidth_bytes_per_s):
            raise SnapshotError(
                f"{where}.load_bandwidth_bytes_per_s", "a finite number > 0", model.load_bandwidth_bytes_per_s
            )
        _check_number(model.init_seconds, where, ".init_seconds")
        _check_number(model.priority, where, ".priority")
        _check_number(model.slo_ttft_s, where, ".slo_ttft_s")
        _check_int(model.min_instances, where, ".min_instances")
        _check_int(model.max_instances, where, ".max_instances", minimum=model.min_instances)


def _check_replicas(snapshot: Snapshot, checked: set[int] | None = None) -> None:
    """Check every replica and every GPU they share (the part of a snapshot a plan changes).

    ``checked`` holds the ``id()`` of replica objects whose own fields are known valid for these
    workers and models (the caller keeps them alive); uniqueness and GPU sharing are checked for all.
    """
    capacities = {w.name: {g.index: g.capacity_bytes for g in w.gpus} for w in snapshot.workers}
    ids: set[str] = set()
    # (worker, gpu) -> replicas there, by position in snapshot.replicas
    on_gpu: dict[tuple[str, int], list[int]] = {}
    for i, replica in enumerate(snapshot.replicas):
        if checked is None or id(replica) not in checked:
            _check_replica_fields(replica, i, snapshot.models, capacities)
        if replica.id in ids:
            raise SnapshotError(f"replicas[{i}].id", "an id unique in the cluster", replica.id)
        ids.add(replica.id)
        for gpu in replica.gpus:
            on_gpu.setdefault((replica.worker, gpu), []).append(i)
    shards = {name: model.spec.shard_bytes for name, model in snapshot.models.items()}
    replicas = snapshot.replicas
    for (worker, gpu), indices in on_gpu.items():
        capacity = capacities[worker][gpu]
        lone = replicas[indices[0]] if len(indices) == 1 else None
        if lone is not None and not lone.borrowed and shards[lone.model] <= capacity:
            continue  # alone on its GPU, borrowing nothing, weights fit: the GPU checks cannot fail
        _check_gpu(snapshot, worker, gpu, indices, capacity, shards)


#: Replica fields that are counts (integers >= 0); the hot path tests them inline, errors come from
#: :func:`_check_int` so the message is the same as everywhere else.
_REPLICA_COUNTS = ("inflight", "kv_total_bytes", "kv_used_bytes", "kv_lent_bytes")


def _check_replica_fields(
    replica: Replica, i: int, models: Mapping[str, ModelConfig], capacities: Mapping[str, Mapping[int, int]]
) -> None:
    """One replica's own fields against its model and worker; runs for every replica every tick, so
    the common valid case costs a few comparisons and only a failing value builds its message."""
    where = f"replicas[{i}]"
    if not replica.id:
        raise SnapshotError(f"{where}.id", "a non-empty id", replica.id)
    _check_known(replica.model, models, f"{where}.model")
    if replica.worker not in capacities:
        raise SnapshotError(f"{where}.worker", f"one of the workers {sorted(capacities)}", replica.worker)
    on_worker = capacities[replica.worker]
    spec = models[replica.model].spec
    tp = spec.tensor_parallel
    if len(replica.gpus) != tp or len(set(replica.gpus)) != tp:
        raise SnapshotError(f"{where}.gpus", f"{tp} distinct GPUs (tensor_parallel)", replica.gpus)
    for j, gpu in enumerate(replica.gpus):
        if gpu not in on_worker:
            raise SnapshotError(f"{where}.gpus[{j}]", f"a GPU of {replica.worker} {sorted(on_worker)}", gpu)
    if not _is_fraction(replica.since, math.inf):
        _check_number(replica.since, f"{where}.since")
    if not _is_fraction(replica.progress, 1.0):
        _check_number(replica.progress, f"{where}.progress")
        if replica.progress > 1.0:
            raise SnapshotError(f"{where}.progress", "a fraction in [0, 1]", replica.progress)
    for name in _REPLICA_COUNTS:
        value = getattr(replica, name)
        if type(value) is not int or value < 0:
            _check_int(value, f"{where}.{name}")
    if replica.kv_used_bytes > replica.kv_total_bytes:
        raise SnapshotError(
            f"{where}.kv_used_bytes", f"<= kv_total_bytes ({replica.kv_total_bytes})", replica.kv_used_bytes
        )
    if replica.kv_lent_bytes > replica.kv_total_bytes:
        raise SnapshotError(
            f"{where}.kv_lent_bytes", f"<= kv_total_bytes ({replica.kv_total_bytes})", replica.kv_lent_bytes
        )
    owner = replica.is_owner
    if replica.kv_lent_bytes and not owner:
        raise SnapshotError(
            f"{where}.kv_lent_bytes", "0 for a replica that is not serving", replica.kv_lent_bytes
        )
    if replica.borrowed and owner:
        raise SnapshotError(f"{where}.borrowed", "false for a serving replica", replica.borrowed)
    if not owner:
        return
    capacity = min(on_worker[g] for g in replica.gpus)
    shard = spec.shard_bytes
    if shard + replica.kv_total_bytes > capacity:
        raise SnapshotError(
            f"{where}.kv_total_bytes",
            f"<= {capacity - shard} (pool capacity minus weights)",
            replica.kv_total_bytes,
        )


def _is_fraction(value: float, top: float) -> bool:
    """Whether ``value`` is a plain finite number in [0, top] (NaN and bools are not); the fast test
    in front of :func:`_check_number`, which names the field when it is not."""
    return type(value) in (int, float) and 0.0 <= value <= top and value != math.inf


def _check_gpu(
    snapshot: Snapshot, worker: str, gpu: int, indices: list[int], capacity: int, shards: Mapping[str, int]
) -> None:
    """One GPU: one replica per model, at most one owner, weights fit, borrowed weights fit the lent space.

    ``shards`` is the per-GPU weight size of each model.
    """
    replicas = snapshot.replicas
    models: set[str] = set()
    owners = [i for i in indices if replicas[i].is_owner]
    for i in indices:
        if replicas[i].model in models:
            raise SnapshotError(f"replicas[{i}].gpus", f"no GPU already holding {replicas[i].model!r}", gpu)
        models.add(replicas[i].model)
    if len(owners) > 1:
        raise SnapshotError(
            f"replicas[{owners[1]}].gpus", f"no GPU already served by replicas[{owners[0]}]", gpu
        )
    total = sum(shards[replicas[i].model] for i in indices)
    if total > capacity:
        raise SnapshotError(
            f"replicas[{indices[-1]}].gpus", f"GPUs with room ({capacity} bytes on {worker}:{gpu})", gpu
        )
    borrowed = [i for i in indices if replicas[i].borrowed]
    if not borrowed:
        return
    for i in borrowed:
        if not owners or not set(replicas[i].gpus) <= set(replicas[owners[0]].gpus):
            raise SnapshotError(
                f"replicas[{i}].borrowed", "true only inside one serving replica's GPUs", True
            )
    lent = replicas[owners[0]].kv_lent_bytes
    if sum(shards[replicas[i].model] for i in borrowed) > lent:
        raise SnapshotError(
            f"replicas[{borrowed[-1]}].borrowed", f"weights within the lent {lent} bytes", True
        )
