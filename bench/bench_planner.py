"""Speed of one full planning step (autoscale + KV reservation + prewarm placement).

Prints the median milliseconds per ``plan_step`` for clusters of 16, 64 and 256 nodes x 8 GPUs
(80 GiB each) serving 128 models, from a realistic mixed state: the cluster is first driven through
a few ticks of load (so it holds many serving, lending and prewarmed replicas), then each measured
step sees fresh demand and forecasts (+-30 % noise, some models bursting), so it has real work to do.
The floor we hold: <= 50 ms median at 64 nodes.

Run: ``python bench/bench_planner.py [--repeat N] [--nodes 16 64 256]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import replace

from warmserve.operator.planning.plan import apply_plan
from warmserve.operator.planning.planner import PlannerConfig, plan_step
from warmserve.operator.planning.reactive import ReactiveState
from warmserve.operator.planning.snapshot import Demand, Forecast, Gpu, ModelConfig, Snapshot, Worker
from warmserve.protocol.state import ModelSpec, ReplicaState

GIB = 1 << 30
GPUS_PER_NODE = 8
GPU_GIB = 80
MODELS = 128
FLOOR_MS = 50.0
SIZES_GIB = (2, 4, 8, 14, 28, 60, 140)  # weights over all shards
WARMUP_TICKS = 4


def build_models(rng: random.Random) -> dict[str, ModelConfig]:
    models = {}
    for i in range(MODELS):
        size = rng.choice(SIZES_GIB)
        tp = 1 if size <= 28 else (2 if size <= 60 else 4)
        spec = ModelSpec(
            f"m{i:03d}",
            f"/cache/m{i:03d}",
            size * GIB,
            tensor_parallel=tp,
            max_concurrency=rng.choice((8, 16, 32)),
        )
        models[spec.name] = ModelConfig(
            spec, load_bandwidth_bytes_per_s=2.0 * GIB, init_seconds=5.0, min_instances=rng.choice((0, 0, 1))
        )
    return models


def base_loads(models: dict[str, ModelConfig], nodes: int, rng: random.Random) -> dict[str, float]:
    """Mean concurrency per model: heavy-tailed shares of about 45 % of the cluster's GPUs, each
    instance running at 60 % of B."""
    raw = {name: rng.lognormvariate(0.0, 1.2) for name in models}
    total = sum(raw.values())
    loads = {}
    for name, model in models.items():
        gpus = 0.45 * nodes * GPUS_PER_NODE * raw[name] / total
        loads[name] = gpus / model.spec.tensor_parallel * 0.6 * model.spec.max_concurrency
    return loads


def tick(snapshot: Snapshot, loads: dict[str, float], rng: random.Random, now: float) -> Snapshot:
    """The next observation: noisy demand and forecasts, in-flight and KV use spread over instances."""
    demand = {n: Demand(max(0.0, load * rng.uniform(0.7, 1.3))) for n, load in loads.items()}
    forecasts = {}
    for name, load in loads.items():
        mean = load * rng.uniform(0.8, 1.2)
        forecasts[name] = Forecast(mean, mean * (1 + (rng.uniform(0.5, 3.0) if rng.random() < 0.3 else 0.2)))
    instances: dict[str, int] = {}
    for r in snapshot.replicas:
        if r.is_instance:
            instances[r.model] = instances.get(r.model, 0) + 1
    replicas = []
    for r in snapshot.replicas:
        if r.state is ReplicaState.SERVING:
            b = snapshot.models[r.model].spec.max_concurrency
            inflight = min(b, round(demand[r.model].inflight / instances[r.model]))
            used = min(r.kv_total_bytes - r.kv_lent_bytes, r.kv_total_bytes * inflight // b)
            r = replace(r, inflight=inflight, kv_used_bytes=max(used, 0))
        replicas.append(r)
    return replace(snapshot, now=now, replicas=tuple(replicas), demand=demand, forecasts=forecasts)


def mixed_state(nodes: int, seed: int) -> tuple[Snapshot, ReactiveState, dict[str, float], random.Random]:
    rng = random.Random(seed)
    models = build_models(rng)
    workers = tuple(
        Worker(f"node{i:03d}", tuple(Gpu(g, GPU_GIB * GIB) for g in range(GPUS_PER_NODE)))
        for i in range(nodes)
    )
    loads = base_loads(models, nodes, rng)
    snapshot = Snapshot(now=0.0, workers=workers, models=models, replicas=())
    state = ReactiveState()
    config = PlannerConfig()
    for t in range(WARMUP_TICKS):
        snapshot = tick(snapshot, loads, rng, now=0.5 * t)
        plan, state = plan_step(snapshot, state, config)
        snapshot = apply_plan(snapshot, plan)
    return snapshot, state, loads, rng


def measure(nodes: int, repeat: int, seed: int) -> tuple[float, dict[str, int], int]:
    """Median ms of ``repeat`` steps, each on a fresh tick of the mixed state; plus the state's census."""
    snapshot, state, loads, rng = mixed_state(nodes, seed)
    census: dict[str, int] = {}
    for r in snapshot.replicas:
        key = "serving" if r.is_instance else ("borrowed" if r.borrowed else "prewarmed")
        census[key] = census.get(key, 0) + 1
    times, actions = [], 0
    for i in range(repeat):
        observed = tick(snapshot, loads, rng, now=10.0 + 0.5 * i)
        start = time.perf_counter()
        plan, _ = plan_step(observed, state)
        times.append((time.perf_counter() - start) * 1000)
        actions += len(plan)
    return statistics.median(times), census, actions // repeat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--nodes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(
        f"plan_step: {MODELS} models, {GPUS_PER_NODE} GPUs x {GPU_GIB} GiB per node, median of {args.repeat}"
    )
    columns = ("nodes", "GPUs", "serving", "prewarmed", "borrowed", "actions/step", "median ms")
    print(" ".join(f"{c:>12}" for c in columns))
    results = {}
    for nodes in args.nodes:
        ms, census, actions = measure(nodes, args.repeat, args.seed)
        results[nodes] = ms
        row = (nodes, nodes * GPUS_PER_NODE, *(census.get(k, 0) for k in columns[2:5]), actions)
        print(" ".join(f"{v:>12}" for v in row), f"{ms:>12.1f}")
    if 64 in results:
        verdict = "meets" if results[64] <= FLOOR_MS else "MISSES"
        print(f"64 nodes: {results[64]:.1f} ms median {verdict} the floor of {FLOOR_MS:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
