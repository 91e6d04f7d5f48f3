"""The worker's floors of issue 4, measured through the runtime and HTTP server on the torch engine.

For tiny Llama models of growing size (made locally, in a model store under /tmp), one worker
(``WorkerRuntime`` on the ``host`` pool + ``TorchEngine``, served by its aiohttp app) is driven by desired
states as the scheduler would drive it, and prints per size:

  weight_MiB     checkpoint bytes
  cold_load_ms   prewarm: map the weights' chunks, copy the checkpoint from the page cache into the slot
                 and build the model around it (the runtime's ``load_seconds``), the first and only load
  promote_ms     median and max of the runtime's ``promotion_seconds`` over the repeats: map the KV
                 chunks behind the weights and start an instance on the slot's weights in place
                 (floor: <= 20 ms, flat across sizes: zero copy)
  ttft_ms        median time to the first streamed token of a 6-token prompt, at an HTTP client on
                 this host, on the warm (serving) replica (floor: <= 20 ms for the smallest model)
  loads          load_seconds count after all the promote/demote cycles (must stay 1)

Load bandwidth from the page cache into a slot (floor >= 70% of memcpy) is ``bench/bench_load.py``.
On a shared machine keep ``--threads 1`` (the default here): with more intra-op threads than idle cores,
torch's OpenMP threads spin against the other processes and one tiny forward takes ~50 ms instead of ~4.
Usage: ``python bench/bench_worker.py [--repeats 20] [--threads 1]`` from the repo root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from warmserve.protocol.state import ObservedState, ReplicaState
from warmserve.worker.engines.torch_engine import TorchEngine
from warmserve.worker.layout import align_up
from warmserve.worker.runtime import WorkerConfig, WorkerRuntime
from warmserve.worker.server import create_app
from warmserve.worker.tiny_model import TinyModelSize, make_tiny_model

SIZES = (TinyModelSize(64, 2, 2, 128), TinyModelSize(256, 4, 8, 512), TinyModelSize(1024, 8, 32, 2048))
FLOOR_S = 0.020
KV_ROOM = 64 * 2**20  # the same KV room for every size, so that only the weights differ
CHUNK = 2 * 2**20
PROMPT = "Hello world, how are you?"


def document(model: Path, generation: int, role: str) -> str:
    spec = {"weights": str(model), "weight_bytes": 1, "max_concurrency": 4}
    replica = {"id": "r0", "model": "m", "gpus": [0], "role": role}
    return json.dumps({"worker": "w", "generation": generation, "models": {"m": spec}, "replicas": [replica]})


class Worker:
    """One in-process worker on one model, driven over HTTP like the scheduler drives it."""

    def __init__(self, session: ClientSession, url: str, runtime: WorkerRuntime, model: Path) -> None:
        self.session, self.url, self.runtime, self.model = session, url, runtime, model
        self.generation = 0

    async def want(self, role: str, state: ReplicaState) -> None:
        self.generation += 1
        async with self.session.put(f"{self.url}/desired", data=document(self.model, self.generation, role)):
            pass
        while True:
            async with self.session.get(f"{self.url}/state") as resp:
                observed = ObservedState.from_json(await resp.text())
            if observed.observed_generation == self.generation:
                (replica,) = observed.replicas
                if replica.state is not state:
                    raise RuntimeError(f"replica {replica.state.value}: {replica.reason}")
                return
            await asyncio.sleep(0.002)

    def metric(self, name: str) -> float:
        value = self.runtime.metrics.registry.get_sample_value(name, {"model": "m"})
        return value or 0.0

    async def ttft(self) -> float:
        body = {"model": "m", "prompt": PROMPT, "max_tokens": 4, "stream": True}
        start = time.perf_counter()
        async with self.session.post(f"{self.url}/v1/completions", json=body) as resp:
            async for _ in resp.content.iter_any():
                first = time.perf_counter() - start
                break
            await resp.read()
        return first


async def measure(model: Path, weight_bytes: int, repeats: int, threads: int) -> dict[str, Any]:
    capacity = align_up(weight_bytes, CHUNK) + KV_ROOM
    config = WorkerConfig("w", 1, capacity, pool_backend="host", store_root=model.parent)
    runtime = WorkerRuntime(config, TorchEngine(threads))
    async with TestServer(create_app(runtime)) as server, ClientSession() as session:
        worker = Worker(session, str(server.make_url("")).rstrip("/"), runtime, model)
        await worker.want("prewarm", ReplicaState.PREWARMED)
        cold = worker.metric("warmserve_worker_load_seconds_sum")
        promotions, ttfts = [], []
        for _ in range(repeats):
            before = worker.metric("warmserve_worker_promotion_seconds_sum")
            await worker.want("serve", ReplicaState.SERVING)
            promotions.append(worker.metric("warmserve_worker_promotion_seconds_sum") - before)
            ttfts.append(await worker.ttft())
            await worker.want("prewarm", ReplicaState.PREWARMED)
        loads = worker.metric("warmserve_worker_load_seconds_count")
    return {
        "weight_MiB": weight_bytes / 2**20,
        "cold_load_ms": cold * 1e3,
        "promote_ms": statistics.median(promotions) * 1e3,
        "promote_max_ms": max(promotions) * 1e3,
        "ttft_ms": statistics.median(ttfts) * 1e3,
        "loads": loads,
    }


def verdict(ms: float) -> str:
    return f"floor {FLOOR_S * 1e3:.0f} ms: {'met' if ms <= FLOOR_S * 1e3 else 'MISSED'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: the cores here are shared)"
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        for i, size in enumerate(SIZES):
            model = make_tiny_model(Path(tmp) / f"m{i}", size)
            weight_bytes = sum(p.stat().st_size for p in model.glob("*.safetensors"))
            rows.append(asyncio.run(measure(model, weight_bytes, args.repeats, args.threads)))
    print(f"torch threads: {args.threads}")
    header = ("weight_MiB", "cold_load_ms", "promote_ms", "promote_max_ms", "ttft_ms", "loads")
    print(" ".join(f"{h:>{max(len(h), 10)}}" for h in header))
    for r in rows:
        print(
            f"{r['weight_MiB']:10.1f} {r['cold_load_ms']:12.1f} {r['promote_ms']:10.2f} "
            f"{r['promote_max_ms']:14.2f} {r['ttft_ms']:10.2f} {r['loads']:10.0f}"
        )
    worst = max(r["promote_ms"] for r in rows)
    spread = worst / min(r["promote_ms"] for r in rows)
    weights = rows[-1]["weight_MiB"] / rows[0]["weight_MiB"]
    print(
        f"promotion: median <= {worst:.2f} ms ({verdict(worst)}); "
        f"largest/smallest {spread:.1f}x for {weights:.0f}x the weights"
    )
    ttft = rows[0]["ttft_ms"]
    print(f"TTFT warm tiny model: {ttft:.2f} ms ({verdict(ttft)})")
    print(f"reloads during switching: {sum(r['loads'] for r in rows) - len(rows):.0f} (must be 0)")


if __name__ == "__main__":
    main()
