"""The worker's desired and observed state: the one contract between control and data plane.

The scheduler writes a :class:`DesiredState` per worker (a Pod annotation ``warmserve.io/desired``, a
file, or an HTTP PUT for the local runner); the worker converges to it and reports an
:class:`ObservedState` (``/state`` and the annotation ``warmserve.io/observed``). Both are plain JSON
documents; ``from_dict`` validates every field and raises :class:`InvalidFieldError` naming the first
bad one, so a malformed document is rejected whole and the previous state is kept.

A replica not listed in the desired state is to be evicted (prewarmed) or drained and dropped
(serving): absence is the eviction order, so a lost document can never leave a stale replica pinned.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from warmserve.protocol.errors import InvalidFieldError

DESIRED_ANNOTATION = "warmserve.io/desired"
OBSERVED_ANNOTATION = "warmserve.io/observed"
#: The environment variable holding the token a writer of ``PUT /desired`` must send (docs/worker-api.md).
CONTROL_TOKEN_ENV = "WARMSERVE_CONTROL_TOKEN"
SCHEMA_VERSION = 1


class ReplicaState(enum.StrEnum):
    """Lifecycle of one replica on one worker: each state says what its memory holds and what it may do."""

    LOADING = "loading"  # chunks mapped into a slot, weights being copied in
    PREWARMED = "prewarmed"  # weights resident, serves nothing, costs only memory
    PROMOTING = "promoting"  # engine adopting the slot's weights in place, KV being mapped
    SERVING = "serving"
    DRAINING = "draining"  # finishing in-flight requests before demotion or removal
    FAILED = "failed"  # see ``reason``; other replicas are unaffected


class Role(enum.StrEnum):
    """What the scheduler wants a replica to be."""

    PREWARM = "prewarm"
    SERVE = "serve"


def load_json(text: str | bytes, field: str) -> Any:
    """A JSON document from an untrusted peer, or :class:`InvalidFieldError` naming ``field``.

    The one rule for every body and annotation we read: besides malformed JSON, the standard parser raises
    other errors on hostile input (bytes that are not UTF-8, an integer over Python's digit limit, nesting
    deeper than its recursion limit), and each must be a bad-input error (a 400), never a crash (a 500).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        got = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except UnicodeDecodeError:
        got = "bytes that are not UTF-8"
    except ValueError as exc:  # an integer longer than sys.get_int_max_str_digits()
        got = str(exc)
    except RecursionError:
        got = "nesting deeper than the parser allows"
    raise InvalidFieldError(field, "a JSON document", got)


def kept_kv_bytes(spec: ModelSpec, kv_bytes_per_token: int, chunk_bytes: int) -> int:
    """Per-GPU KV bytes a serving replica of ``spec`` never lends: room for one request of the model's
    maximum length (``context_length`` tokens of ``kv_bytes_per_token`` bytes, split over its tensor-parallel
    GPUs), in whole chunks, and at least one chunk (all that is kept when no ``context_length`` is given).

    The one rule for how far lending may go, used by the worker (with its engine's bytes per token), the
    planner and the simulated worker (with the spec's): a request the engine accepts, being at most
    ``context_length`` tokens long, can then always be admitted once the requests before it finish, never
    refused as a 503 for want of space lent to prewarmed models.
    """
    per_gpu = -(-spec.context_length * kv_bytes_per_token // spec.tensor_parallel)
    return max(-(-per_gpu // chunk_bytes) * chunk_bytes, chunk_bytes)


def loads_borrowed(role: Role, gpus: Collection[int], lenders: Iterable[Collection[int]]) -> bool:
    """Whether a replica whose load starts now sits in KV space that a serving replica lends.

    The one rule for ``borrowed``, used by the worker runtime, the simulated worker and the scheduler's view
    of replicas it ordered: a replica loaded to be prewarmed whose GPUs lie within those of a serving (or
    promoting) replica lending KV space (``lenders``: their GPU sets). Such a replica is evicted first when
    the lender takes its space back. A replica loaded to serve is never borrowed: it will own its memory, and
    a serving replica flagged borrowed is a contradiction the scheduler refuses. A borrowed replica that is
    promoted stops being borrowed for the same reason.
    """
    return role is Role.PREWARM and any(set(gpus) <= set(lender) for lender in lenders)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What a worker needs to know to load and run one model (from its ModelDeployment)."""

    name: str
    weights: str  # a directory in the node-local cache (safetensors + config.json), or a URI
    weight_bytes: int  # total over all tensor-parallel shards
    tensor_parallel: int = 1
    kv_bytes_per_token: int = 0  # total over all shards; 0 = derive from the config
    max_concurrency: int = 8  # B: in-flight requests per instance
    engine_args: Mapping[str, str] = field(default_factory=dict)
    context_length: int = 0  # longest prompt + completion in tokens; 0: none given (the KV space bounds it)

    @property
    def shard_bytes(self) -> int:
        """Weight bytes each GPU of a replica holds."""
        return -(-self.weight_bytes // self.tensor_parallel)


@dataclass(frozen=True, slots=True)
class DesiredReplica:
    """One replica the worker must hold: its model, its GPUs, and what it should be doing."""

    id: str
    model: str
    gpus: tuple[int, ...]
    role: Role
    priority: float = 0.0  # higher is kept longer when memory must be given back
    kv_lend_bytes: int = 0  # per GPU: free KV space a serving replica lends to the pool

    def __init__(  # written out: see ObservedReplica.__init__
        self,
        id: str,
        model: str,
        gpus: tuple[int, ...],
        role: Role,
        priority: float = 0.0,
        kv_lend_bytes: int = 0,
    ) -> None:
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "gpus", gpus)
        object.__setattr__(self, "role", role)
        object.__setattr__(self, "priority", priority)
        object.__setattr__(self, "kv_lend_bytes", kv_lend_bytes)


@dataclass(frozen=True, slots=True)
class DesiredState:
    """The full desired state of one worker, versioned by ``generation``."""

    worker: str
    generation: int
    models: Mapping[str, ModelSpec]
    replicas: tuple[DesiredReplica, ...]
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "worker": self.worker,
            "generation": self.generation,
            "models": {name: _spec_dict(spec) for name, spec in self.models.items()},
            "replicas": [_replica_dict(r) for r in self.replicas],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: object) -> DesiredState:
        """Validate a document; raise :class:`InvalidFieldError` naming the first bad field."""
        doc = _mapping(data, "desired")
        schema = _int(doc.get("schema", SCHEMA_VERSION), "schema", minimum=1)
        if schema != SCHEMA_VERSION:
            raise InvalidFieldError("schema", f"{SCHEMA_VERSION}", schema)
        worker = _str(doc.get("worker"), "worker")
        generation = _int(doc.get("generation"), "generation", minimum=0)
        models_doc = _mapping(doc.get("models", {}), "models")
        models = {name: _parse_spec(spec, f"models.{name}", name) for name, spec in models_doc.items()}
        replicas = tuple(
            _parse_desired_replica(r, f"replicas[{i}]", models)
            for i, r in enumerate(_sequence(doc.get("replicas", []), "replicas"))
        )
        _check_unique_ids([r.id for r in replicas])
        _check_gpu_exclusivity(replicas)
        return cls(worker=worker, generation=generation, models=models, replicas=replicas)

    @classmethod
    def from_json(cls, text: str | bytes) -> DesiredState:
        return cls.from_dict(load_json(text, "desired"))


@dataclass(frozen=True, slots=True)
class GpuUsage:
    """Pool accounting of one GPU as the worker sees it."""

    index: int
    capacity_bytes: int
    used_bytes: int
    lent_bytes: int = 0  # free KV space of serving replicas lent out for prewarming

    def __init__(  # written out: see ObservedReplica.__init__
        self, index: int, capacity_bytes: int, used_bytes: int, lent_bytes: int = 0
    ) -> None:
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "capacity_bytes", capacity_bytes)
        object.__setattr__(self, "used_bytes", used_bytes)
        object.__setattr__(self, "lent_bytes", lent_bytes)


@dataclass(frozen=True, slots=True)
class ObservedReplica:
    """One replica as it is, with the time (seconds since the epoch) it entered its state."""

    id: str
    model: str
    gpus: tuple[int, ...]
    state: ReplicaState
    since: float
    progress: float = 1.0  # fraction of weights loaded, for LOADING
    inflight: int = 0
    kv_total_bytes: int = 0  # per GPU
    kv_used_bytes: int = 0  # per GPU
    borrowed: bool = False  # sits in KV space lent by a serving replica
    endpoint: str = ""  # where to send requests while SERVING
    reason: str = ""  # why it FAILED or was refused

    def __init__(
        self,
        id: str,
        model: str,
        gpus: tuple[int, ...],
        state: ReplicaState,
        since: float,
        progress: float = 1.0,
        inflight: int = 0,
        kv_total_bytes: int = 0,
        kv_used_bytes: int = 0,
        borrowed: bool = False,
        endpoint: str = "",
        reason: str = "",
    ) -> None:
        """The fields in order, as the generated ``__init__`` would take them. Written out because
        mypyc compiles this one to plain field stores, while the one :mod:`dataclasses` generates
        stays interpreted (mypyc/mypyc#817): with the other classes built every tick, a quarter of a
        compiled simulation's time. ``tests/test_dataclass_inits.py`` holds every written-out
        ``__init__`` to its class's fields."""
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "gpus", gpus)
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "since", since)
        object.__setattr__(self, "progress", progress)
        object.__setattr__(self, "inflight", inflight)
        object.__setattr__(self, "kv_total_bytes", kv_total_bytes)
        object.__setattr__(self, "kv_used_bytes", kv_used_bytes)
        object.__setattr__(self, "borrowed", borrowed)
        object.__setattr__(self, "endpoint", endpoint)
        object.__setattr__(self, "reason", reason)


@dataclass(frozen=True, slots=True)
class ObservedState:
    """What a worker reports: its pool per GPU and its replicas."""

    worker: str
    observed_generation: int  # the last desired generation fully applied (-1: none yet)
    ready: bool
    gpus: tuple[GpuUsage, ...]
    replicas: tuple[ObservedReplica, ...]
    endpoint: str = ""
    error: str = ""  # why the last desired state was rejected, if it was
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["gpus"] = [asdict(g) for g in self.gpus]
        doc["replicas"] = [{**asdict(r), "gpus": list(r.gpus), "state": r.state.value} for r in self.replicas]
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: object) -> ObservedState:
        """Validate a report; raise :class:`InvalidFieldError` naming the first bad field."""
        doc = _mapping(data, "observed")
        gpus = tuple(_parse_gpu(g, f"gpus[{i}]") for i, g in enumerate(_sequence(doc.get("gpus"), "gpus")))
        replicas = tuple(
            _parse_observed_replica(r, f"replicas[{i}]")
            for i, r in enumerate(_sequence(doc.get("replicas", []), "replicas"))
        )
        _check_unique_ids([r.id for r in replicas])
        return cls(
            worker=_str(doc.get("worker"), "worker"),
            observed_generation=_int(doc.get("observed_generation", -1), "observed_generation", minimum=-1),
            ready=_bool(doc.get("ready", False), "ready"),
            gpus=gpus,
            replicas=replicas,
            endpoint=_str(doc.get("endpoint", ""), "endpoint", allow_empty=True),
            error=_str(doc.get("error", ""), "error", allow_empty=True),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ObservedState:
        return cls.from_dict(load_json(text, "observed"))


# --- validation helpers: each names the field it checks ------------------------------------------


def _mapping(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidFieldError(name, "an object", value)
    return value


def _sequence(value: object, name: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise InvalidFieldError(name, "a list", value)
    return value


def _str(value: object, name: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise InvalidFieldError(name, "a non-empty string" if not allow_empty else "a string", value)
    return value


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidFieldError(name, "true or false", value)
    return value


def _int(value: object, name: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidFieldError(name, f"an integer >= {minimum}", value)
    return value


def _float(value: object, name: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value  # not NaN
    if ok and minimum is not None and float(value) < minimum:  # type: ignore[arg-type]
        ok = False
    if ok and maximum is not None and float(value) > maximum:  # type: ignore[arg-type]
        ok = False
    if not ok:
        bounds = f" in [{minimum}, {maximum}]" if minimum is not None or maximum is not None else ""
        raise InvalidFieldError(name, f"a number{bounds}", value)
    return float(value)  # type: ignore[arg-type]


def _gpus(value: object, name: str) -> tuple[int, ...]:
    gpus = tuple(_int(g, f"{name}[{i}]") for i, g in enumerate(_sequence(value, name)))
    if not gpus or len(set(gpus)) != len(gpus):
        raise InvalidFieldError(name, "a non-empty list of distinct GPU indices", list(gpus))
    return gpus


def _parse_spec(value: object, name: str, model: str) -> ModelSpec:
    doc = _mapping(value, name)
    spec_name = _str(doc.get("name", model), f"{name}.name")
    if spec_name != model:
        raise InvalidFieldError(f"{name}.name", f"the key {model!r}", spec_name)
    args = _mapping(doc.get("engine_args", {}), f"{name}.engine_args")
    return ModelSpec(
        name=spec_name,
        weights=_str(doc.get("weights"), f"{name}.weights"),
        weight_bytes=_int(doc.get("weight_bytes"), f"{name}.weight_bytes", minimum=1),
        tensor_parallel=_int(doc.get("tensor_parallel", 1), f"{name}.tensor_parallel", minimum=1),
        kv_bytes_per_token=_int(doc.get("kv_bytes_per_token", 0), f"{name}.kv_bytes_per_token"),
        max_concurrency=_int(doc.get("max_concurrency", 8), f"{name}.max_concurrency", minimum=1),
        engine_args={k: _str(v, f"{name}.engine_args.{k}", allow_empty=True) for k, v in args.items()},
        context_length=_int(doc.get("context_length", 0), f"{name}.context_length"),
    )


def _parse_desired_replica(value: object, name: str, models: Mapping[str, ModelSpec]) -> DesiredReplica:
    doc = _mapping(value, name)
    model = _str(doc.get("model"), f"{name}.model")
    if model not in models:
        raise InvalidFieldError(f"{name}.model", f"one of the declared models {sorted(models)}", model)
    gpus = _gpus(doc.get("gpus"), f"{name}.gpus")
    if len(gpus) != models[model].tensor_parallel:
        raise InvalidFieldError(
            f"{name}.gpus", f"{models[model].tensor_parallel} GPUs (tensor_parallel)", gpus
        )
    role = doc.get("role")
    if role not in {r.value for r in Role}:
        raise InvalidFieldError(f"{name}.role", f"one of {[r.value for r in Role]}", role)
    return DesiredReplica(
        id=_str(doc.get("id"), f"{name}.id"),
        model=model,
        gpus=gpus,
        role=Role(role),
        priority=_float(doc.get("priority", 0.0), f"{name}.priority", minimum=0.0),
        kv_lend_bytes=_int(doc.get("kv_lend_bytes", 0), f"{name}.kv_lend_bytes"),
    )


def _parse_gpu(value: object, name: str) -> GpuUsage:
    doc = _mapping(value, name)
    usage = GpuUsage(
        index=_int(doc.get("index"), f"{name}.index"),
        capacity_bytes=_int(doc.get("capacity_bytes"), f"{name}.capacity_bytes", minimum=1),
        used_bytes=_int(doc.get("used_bytes"), f"{name}.used_bytes"),
        lent_bytes=_int(doc.get("lent_bytes", 0), f"{name}.lent_bytes"),
    )
    if usage.used_bytes > usage.capacity_bytes:
        raise InvalidFieldError(
            f"{name}.used_bytes", f"<= capacity_bytes ({usage.capacity_bytes})", usage.used_bytes
        )
    return usage


def _parse_observed_replica(value: object, name: str) -> ObservedReplica:
    doc = _mapping(value, name)
    state = doc.get("state")
    if state not in {s.value for s in ReplicaState}:
        raise InvalidFieldError(f"{name}.state", f"one of {[s.value for s in ReplicaState]}", state)
    return ObservedReplica(
        id=_str(doc.get("id"), f"{name}.id"),
        model=_str(doc.get("model"), f"{name}.model"),
        gpus=_gpus(doc.get("gpus"), f"{name}.gpus"),
        state=ReplicaState(state),
        since=_float(doc.get("since"), f"{name}.since", minimum=0.0),
        progress=_float(doc.get("progress", 1.0), f"{name}.progress", minimum=0.0, maximum=1.0),
        inflight=_int(doc.get("inflight", 0), f"{name}.inflight"),
        kv_total_bytes=_int(doc.get("kv_total_bytes", 0), f"{name}.kv_total_bytes"),
        kv_used_bytes=_int(doc.get("kv_used_bytes", 0), f"{name}.kv_used_bytes"),
        borrowed=_bool(doc.get("borrowed", False), f"{name}.borrowed"),
        endpoint=_str(doc.get("endpoint", ""), f"{name}.endpoint", allow_empty=True),
        reason=_str(doc.get("reason", ""), f"{name}.reason", allow_empty=True),
    )


def _check_unique_ids(ids: Sequence[str]) -> None:
    seen: set[str] = set()
    for i, rid in enumerate(ids):
        if rid in seen:
            raise InvalidFieldError(f"replicas[{i}].id", "an id unique on this worker", rid)
        seen.add(rid)


def _check_gpu_exclusivity(replicas: Sequence[DesiredReplica]) -> None:
    """A GPU never holds two replicas of one model, and never two serving replicas."""
    models_on: dict[int, set[str]] = {}
    serving_on: dict[int, str] = {}
    for i, r in enumerate(replicas):
        for gpu in r.gpus:
            if r.model in models_on.setdefault(gpu, set()):
                raise InvalidFieldError(f"replicas[{i}].gpus", f"no GPU already holding {r.model!r}", gpu)
            models_on[gpu].add(r.model)
            if r.role is Role.SERVE:
                if gpu in serving_on:
                    raise InvalidFieldError(
                        f"replicas[{i}].gpus", f"no GPU already serving {serving_on[gpu]!r}", gpu
                    )
                serving_on[gpu] = r.model


def _spec_dict(spec: ModelSpec) -> dict[str, Any]:
    """Field by field, not ``asdict``: its deep copy cannot copy a read-only ``engine_args`` mapping."""
    return {**{f.name: getattr(spec, f.name) for f in fields(spec)}, "engine_args": dict(spec.engine_args)}


def _replica_dict(replica: DesiredReplica) -> dict[str, Any]:
    return {**asdict(replica), "gpus": list(replica.gpus), "role": replica.role.value}
