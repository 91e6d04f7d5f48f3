"""Gateway overhead and throughput on loopback, in front of a real worker (fake engine, zero delays).

Starts one worker process (``warmserve.worker.server``, fake engine at speed 0, two serving replicas of
one model) and one gateway process (``warmserve.gateway``), then drives them from this process with
aiohttp clients and prints:

- ``added_latency_p50_ms`` / ``added_latency_p99_ms``: at 200 requests/s (open loop, non-streamed
  completions), the p50/p99 of the client-side latency through the gateway minus the p50/p99 for the
  same requests sent straight to the worker (also at 200/s, interleaved request by request, so the
  machine's other tenants weigh on both paths alike). ``quietest_round_...`` is the same for the round
  of 300 requests the other tenants disturbed least (lowest direct p99);
- ``max_gateway_rps``: non-streamed requests/s completed through the gateway by closed-loop clients, the
  best of three runs (with ``max_direct_rps``, the same load straight to the worker, for context), and
  the errors seen;
- ``gateway_cpu_ms_per_request``: the gateway process's CPU time (user + system, from /proc) per request
  of that run, and ``gateway_rps_per_core``, its inverse: the rate one otherwise idle core sustains. The
  machine is shared, so wall-clock rates move with the other tenants' load; CPU time per request moves
  much less. With the worker's and this client's CPU per request it also gives ``idle_machine_bound_rps``,
  the rate the whole loopback path (client + gateway + worker) could reach with the machine's cores idle.

Floors (issue 5): added p50 ≤ 2 ms, p99 ≤ 10 ms at 200 req/s; ≥ 1,000 req/s sustained. Request counts are
bounded; everything runs on 127.0.0.1. Usage: ``python bench/bench_gateway.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

MODEL = "bench-model"
B = 512  # per instance: high enough that the cap never limits the throughput run
RATE = 200.0


@dataclass(frozen=True)
class Plan:
    rounds: int  # rounds of interleaved direct and gateway requests, each path at RATE
    per_round: int
    throughput_requests: int  # per closed-loop run
    repeats: int  # closed-loop runs per path
    concurrency: int


FULL = Plan(rounds=6, per_round=300, throughput_requests=4000, repeats=3, concurrency=32)
QUICK = Plan(rounds=2, per_round=200, throughput_requests=1500, repeats=1, concurrency=32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_worker(port: int) -> None:
    """The worker process: the real worker app, fake engine with zero delays."""
    from aiohttp import web

    from warmserve.worker.engines.fake import FakeEngine
    from warmserve.worker.runtime import WorkerConfig, WorkerRuntime
    from warmserve.worker.server import create_app
    from warmserve.worker.timing import gpu_profile

    config = WorkerConfig("bench", gpus=2, gpu_memory_bytes=1 << 30, endpoint=f"http://127.0.0.1:{port}")
    runtime = WorkerRuntime(config, FakeEngine(gpu_profile("h100"), speed=0.0))
    web.run_app(
        create_app(runtime),
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        handler_cancellation=True,
    )


def run_gateway(port: int, worker_url: str) -> None:
    """The gateway process, as ``warmserve gateway`` runs it."""
    from warmserve.gateway.app import Gateway, run
    from warmserve.gateway.config import DeclaredModel, GatewayConfig

    config = GatewayConfig((DeclaredModel(MODEL, B),), (worker_url,))
    run(Gateway(config), "127.0.0.1", port)


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(600):
        try:
            async with session.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def make_serving(session: aiohttp.ClientSession, worker: str, gateway: str) -> None:
    """Two serving replicas of MODEL, and the gateway seeing both."""
    from warmserve.protocol.state import DesiredReplica, DesiredState, ModelSpec, Role

    spec = ModelSpec(MODEL, "/nonexistent", 64 << 20, kv_bytes_per_token=1024, max_concurrency=B)
    replicas = tuple(DesiredReplica(f"r{i}", MODEL, (i,), Role.SERVE) for i in range(2))
    desired = DesiredState("bench", 1, {MODEL: spec}, replicas)
    async with session.put(f"{worker}/desired", data=desired.to_json()) as r:
        assert r.status == 202, await r.text()
    for _ in range(600):
        async with session.get(f"{gateway}/demand") as r:
            demand = await r.json()
        body = {"model": MODEL, "prompt": "warm up", "max_tokens": 1}
        async with session.post(f"{gateway}/v1/completions", json=body) as r:
            await r.read()
            if r.status == 200 and MODEL in demand:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("the gateway never routed to the worker")


def body_for(i: int) -> dict[str, object]:
    return {"model": MODEL, "prompt": f"request {i} of the benchmark", "max_tokens": 4, "seed": i}


async def one(session: aiohttp.ClientSession, url: str, body: dict[str, object]) -> float:
    """Latency of one non-streamed completion in seconds; raises on a non-200 answer."""
    start = time.perf_counter()
    async with session.post(f"{url}/v1/completions", json=body) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"status {r.status}")
    return time.perf_counter() - start


async def open_loop(
    session: aiohttp.ClientSession, worker: str, gateway: str, bodies: Sequence[dict[str, object]]
) -> tuple[list[float], list[float]]:
    """Send each body straight to the worker and, half a period later, through the gateway, both at RATE.

    A fixed schedule, whatever the answers' pace (open loop); interleaving the two paths request by
    request makes both see the same load from the machine's other tenants.
    """
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    direct: list[asyncio.Task[float]] = []
    via: list[asyncio.Task[float]] = []
    for i, body in enumerate(bodies):
        for path, url, offset in ((direct, worker, 0.0), (via, gateway, 0.5)):
            await asyncio.sleep(max(0.0, t0 + (i + offset) / RATE - loop.time()))
            path.append(asyncio.create_task(one(session, url, body)))
    return list(await asyncio.gather(*direct)), list(await asyncio.gather(*via))


async def closed_loop(
    session: aiohttp.ClientSession, url: str, total: int, concurrency: int
) -> tuple[float, int]:
    """Requests/s completed by ``concurrency`` clients sending back to back, and the errors."""
    counter = iter(range(total))
    errors = 0

    async def client() -> None:
        nonlocal errors
        for i in counter:
            try:
                await one(session, url, body_for(i))
            except (RuntimeError, aiohttp.ClientError):
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return total / (time.perf_counter() - start), errors


def pct(values: Sequence[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def latency(session: aiohttp.ClientSession, plan: Plan, worker: str, gateway: str) -> None:
    """Added latency at RATE: over all rounds, and in the quietest round (lowest direct p99)."""
    rounds = []
    for r in range(plan.rounds):
        bodies = [body_for(r * plan.per_round + i) for i in range(plan.per_round)]
        rounds.append(await open_loop(session, worker, gateway, bodies))
    direct = [x for d, _ in rounds for x in d]
    via = [x for _, v in rounds for x in v]
    print(f"requests_per_path={len(via)} rate_rps={RATE:.0f} rounds={plan.rounds}")
    print(f"direct_p50_ms={pct(direct, 0.5) * 1e3:.3f} direct_p99_ms={pct(direct, 0.99) * 1e3:.3f}")
    print(f"gateway_p50_ms={pct(via, 0.5) * 1e3:.3f} gateway_p99_ms={pct(via, 0.99) * 1e3:.3f}")
    print(f"added_latency_p50_ms={(pct(via, 0.5) - pct(direct, 0.5)) * 1e3:.3f}")
    print(f"added_latency_p99_ms={(pct(via, 0.99) - pct(direct, 0.99)) * 1e3:.3f}")
    quiet_direct, quiet_via = min(rounds, key=lambda dv: pct(dv[0], 0.99))
    print(f"quietest_round_added_latency_p50_ms={(pct(quiet_via, 0.5) - pct(quiet_direct, 0.5)) * 1e3:.3f}")
    print(f"quietest_round_added_latency_p99_ms={(pct(quiet_via, 0.99) - pct(quiet_direct, 0.99)) * 1e3:.3f}")


async def throughput(
    session: aiohttp.ClientSession, plan: Plan, worker: str, gateway: str, pids: tuple[int, int]
) -> None:
    """Closed-loop req/s, best of the repeats (the least disturbed), and CPU per request of each process."""
    best_direct = best_gateway = 0.0
    errors = 0
    cpu = [0.0, 0.0, 0.0]  # worker, gateway, this client: seconds over all gateway runs
    for _ in range(plan.repeats):
        rps, err = await closed_loop(session, worker, plan.throughput_requests, plan.concurrency)
        best_direct, errors = max(best_direct, rps), errors + err
        before = (*(cpu_seconds(pid) for pid in pids), time.process_time())
        rps, err = await closed_loop(session, gateway, plan.throughput_requests, plan.concurrency)
        after = (*(cpu_seconds(pid) for pid in pids), time.process_time())
        best_gateway, errors = max(best_gateway, rps), errors + err
        cpu = [c + b - a for c, a, b in zip(cpu, before, after, strict=True)]
    worker_cpu, gateway_cpu, client_cpu = (c / (plan.repeats * plan.throughput_requests) for c in cpu)
    cores = os.cpu_count() or 1
    print(f"throughput_requests={plan.throughput_requests} clients={plan.concurrency} repeats={plan.repeats}")
    print(f"max_direct_rps={best_direct:.0f}")
    print(f"max_gateway_rps={best_gateway:.0f} errors={errors}")
    print(f"gateway_cpu_ms_per_request={gateway_cpu * 1e3:.3f}")
    print(f"gateway_rps_per_core={1 / gateway_cpu:.0f}")
    print(f"worker_cpu_ms_per_request={worker_cpu * 1e3:.3f}")
    print(f"client_cpu_ms_per_request={client_cpu * 1e3:.3f}")
    bound = cores / (worker_cpu + gateway_cpu + client_cpu)
    print(f"idle_machine_bound_rps={bound:.0f} (client + gateway + worker on {cores} idle cores)")


async def measure(plan: Plan, worker: str, gateway: str, pids: tuple[int, int]) -> None:
    """Print every figure; ``pids`` are the worker's and the gateway's processes."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await wait_ready(session, f"{worker}/healthz")
        await wait_ready(session, f"{gateway}/healthz")
        await make_serving(session, worker, gateway)
        await closed_loop(session, gateway, 500, 16)  # warm connections and code paths on both hops
        await latency(session, plan, worker, gateway)
        await throughput(session, plan, worker, gateway, pids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    wport, gport = free_port(), free_port()
    worker_url, gateway_url = f"http://127.0.0.1:{wport}", f"http://127.0.0.1:{gport}"
    procs = [
        ctx.Process(target=run_worker, args=(wport,), daemon=True),
        ctx.Process(target=run_gateway, args=(gport, worker_url), daemon=True),
    ]
    for p in procs:
        p.start()
    try:
        worker_pid, gateway_pid = procs[0].pid, procs[1].pid
        assert worker_pid is not None and gateway_pid is not None
        asyncio.run(
            measure(QUICK if args.quick else FULL, worker_url, gateway_url, (worker_pid, gateway_pid))
        )
    finally:
        for p in reversed(procs):
            p.terminate()
            p.join(5)


if __name__ == "__main__":
    main()
