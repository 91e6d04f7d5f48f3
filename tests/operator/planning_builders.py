"""Small builders for planning tests: hand-checked clusters in a few lines, and hypothesis strategies
for random consistent snapshots (shared by the planner's test modules; not a test module itself)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hypothesis import strategies as st

from warmserve.operator.planning.snapshot import Demand, Forecast, Gpu, ModelConfig, Replica, Snapshot, Worker
from warmserve.protocol.state import ModelSpec, ReplicaState, Role

GIB = 1 << 30


def model(
    name: str,
    gib: float = 4,
    *,
    tp: int = 1,
    b: int = 8,
    bandwidth_gib: float = 1.0,
    min_instances: int = 0,
    max_instances: int = 1_000,
    priority: float = 1.0,
) -> ModelConfig:
    """A model of ``gib`` GiB of weights (over all shards), loading at ``bandwidth_gib`` GiB/s."""
    spec = ModelSpec(name, f"/cache/{name}", int(gib * GIB), tensor_parallel=tp, max_concurrency=b)
    return ModelConfig(
        spec,
        load_bandwidth_bytes_per_s=bandwidth_gib * GIB,
        min_instances=min_instances,
        max_instances=max_instances,
        priority=priority,
    )


def workers(count: int = 1, gpus: int = 4, gib: float = 16) -> tuple[Worker, ...]:
    return tuple(Worker(f"w{i}", tuple(Gpu(g, int(gib * GIB)) for g in range(gpus))) for i in range(count))


def prewarmed(rid: str, name: str, gpus: Iterable[int], worker: str = "w0", **fields: object) -> Replica:
    return Replica(rid, name, worker, tuple(gpus), ReplicaState.PREWARMED, Role.PREWARM, **fields)  # type: ignore[arg-type]


def serving(
    rid: str, name: str, gpus: Iterable[int], kv_total_gib: float, worker: str = "w0", **fields: object
) -> Replica:
    kv = int(kv_total_gib * GIB)
    return Replica(
        rid,
        name,
        worker,
        tuple(gpus),
        ReplicaState.SERVING,
        Role.SERVE,
        kv_total_bytes=kv,
        **fields,  # type: ignore[arg-type]
    )


def snapshot(
    models: Iterable[ModelConfig],
    replicas: Iterable[Replica] = (),
    *,
    cluster: tuple[Worker, ...] | None = None,
    forecasts: Mapping[str, tuple[float, float]] | None = None,
    demand: Mapping[str, float] | None = None,
    now: float = 100.0,
) -> Snapshot:
    """A snapshot; ``forecasts`` maps a model to (mean, peak) and ``demand`` to its in-flight load."""
    return Snapshot(
        now=now,
        workers=cluster if cluster is not None else workers(),
        models={m.spec.name: m for m in models},
        replicas=tuple(replicas),
        forecasts={k: Forecast(mean, peak) for k, (mean, peak) in (forecasts or {}).items()},
        demand={k: Demand(v) for k, v in (demand or {}).items()},
    )


OWNER_KINDS = [(ReplicaState.SERVING, Role.SERVE)] * 4 + [
    (ReplicaState.PROMOTING, Role.SERVE),
    (ReplicaState.LOADING, Role.SERVE),
    (ReplicaState.DRAINING, Role.PREWARM),
]
GUEST_STATES = [ReplicaState.PREWARMED] * 5 + [ReplicaState.FAILED]


@st.composite
def random_snapshots(draw: st.DrawFn) -> Snapshot:
    """A consistent, laminar snapshot: 1-3 workers of 2-8 GPUs, 1-5 models (TP 1, 2 or 4), some of them
    serving (some lending KV, with borrowers), some prewarmed, with forecasts and demand."""
    n_gpus = draw(st.sampled_from([2, 4, 8]))
    cluster = workers(draw(st.integers(1, 3)), n_gpus, gib=16)
    n_models = draw(st.integers(1, 5))
    models = [
        model(
            f"m{i}",
            draw(st.sampled_from([1, 2, 3, 5, 8])),
            tp=draw(st.sampled_from([t for t in (1, 1, 2, 4) if t <= n_gpus])),
            b=draw(st.sampled_from([4, 8])),
            min_instances=draw(st.sampled_from([0, 0, 1])),
            max_instances=draw(st.sampled_from([1, 3, 100])),
            priority=draw(st.sampled_from([0.5, 1.0, 2.0])),
        )
        for i in range(n_models)
    ]
    specs = {m.spec.name: m for m in models}
    replicas: list[Replica] = []
    used: dict[tuple[str, int], int] = {}
    lent_left: dict[tuple[str, int], int] = {}
    owner: dict[tuple[str, int], str] = {}
    names: dict[tuple[str, int], set[str]] = {}
    for i in range(draw(st.integers(0, 12))):
        m = specs[draw(st.sampled_from(sorted(specs)))]
        w = draw(st.sampled_from(cluster))
        tp = m.spec.tensor_parallel
        start = draw(st.integers(0, n_gpus // tp - 1)) * tp
        gpus = tuple(range(start, start + tp))
        keys = [(w.name, g) for g in gpus]
        shard = m.spec.shard_bytes
        if any(m.spec.name in names.get(k, set()) for k in keys):
            continue
        owners = {owner.get(k) for k in keys}
        kind = draw(st.sampled_from(["prewarm", "serve", "loading"]))
        if kind == "serve":
            if any(k in names for k in keys):
                continue
            kv_total = 16 * GIB - shard
            kv_used = draw(st.integers(0, kv_total // GIB)) * GIB
            lent = draw(st.integers(0, (kv_total - kv_used) // GIB)) * GIB
            inflight = draw(st.integers(0, 2 * m.spec.max_concurrency))
            # mostly serving; also a promotion or a cold start under way, or a demotion draining
            state, role = draw(st.sampled_from(OWNER_KINDS))
            lent = lent if state is ReplicaState.SERVING else 0
            r = Replica(
                f"r{i}",
                m.spec.name,
                w.name,
                gpus,
                state,
                role,
                since=90.0,
                inflight=inflight,
                kv_total_bytes=kv_total,
                kv_used_bytes=kv_used,
                kv_lent_bytes=lent,
            )
            for k in keys:
                owner[k] = r.id
                lent_left[k] = lent
        else:
            if len(owners) != 1:
                continue
            borrowed = owners != {None}
            room = lent_left if borrowed else {k: 16 * GIB - used.get(k, 0) for k in keys}
            if borrowed and any(owner[k] != owner[keys[0]] for k in keys):
                continue
            if any(room.get(k, 0) < shard for k in keys):
                continue
            state = ReplicaState.LOADING if kind == "loading" else draw(st.sampled_from(GUEST_STATES))
            r = Replica(
                f"r{i}",
                m.spec.name,
                w.name,
                gpus,
                state,
                Role.PREWARM,
                since=float(i),
                progress=0.5 if kind == "loading" else 1.0,
                borrowed=borrowed,
            )
            if borrowed:
                for k in keys:
                    lent_left[k] -= shard
        for k in keys:
            used[k] = used.get(k, 0) + shard
            names.setdefault(k, set()).add(m.spec.name)
        replicas.append(r)
    forecasts = {}
    demand = {}
    for name in specs:
        if draw(st.booleans()):
            mean = draw(st.floats(0, 40))
            forecasts[name] = (mean, mean + draw(st.floats(0, 40)))
        demand[name] = draw(st.sampled_from([0.0, 0.0, 3.0, 10.0, 30.0]))
    return snapshot(models, replicas, cluster=cluster, forecasts=forecasts, demand=demand)
