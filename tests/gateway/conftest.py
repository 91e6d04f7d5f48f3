"""Real upstreams for the gateway's HTTP tests: worker servers with the fake engine, on loopback.

Each worker is the real ``warmserve.worker.server`` application over a real socket, given a desired state
over ``PUT /desired`` and waited for until its replicas serve. ``speed`` scales the fake engine's timing
model (0: no delays; larger: requests that last long enough to be cancelled or overlap).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
import kubernetes.client
import pytest
from aiohttp import web

from warmserve.gateway.app import Gateway
from warmserve.gateway.config import GatewayConfig
from warmserve.protocol.state import (
    DesiredReplica,
    DesiredState,
    ModelSpec,
    ObservedState,
    ReplicaState,
    Role,
)
from warmserve.worker.engines.fake import FakeEngine
from warmserve.worker.runtime import WorkerConfig, WorkerRuntime
from warmserve.worker.server import create_app
from warmserve.worker.timing import gpu_profile

WEIGHT_BYTES = 64 * 1024 * 1024


def bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class RunningWorker:
    url: str
    runner: web.AppRunner
    runtime: WorkerRuntime
    generation: int = 0

    async def serve(
        self, replicas: Mapping[str, str], caps: Mapping[str, int], role: Role = Role.SERVE
    ) -> None:
        """Make exactly ``replicas`` (id → model) serve (or, with ``role`` prewarm, be prewarmed), one per
        GPU, each model with cap B from ``caps``."""
        self.generation += 1
        models = {
            m: ModelSpec(m, "/nonexistent", WEIGHT_BYTES, kv_bytes_per_token=1024, max_concurrency=caps[m])
            for m in set(replicas.values())
        }
        desired = DesiredState(
            worker=self.runtime.config.name,
            generation=self.generation,
            models=models,
            replicas=tuple(
                DesiredReplica(rid, m, (i,), role) for i, (rid, m) in enumerate(sorted(replicas.items()))
            ),
        )
        async with aiohttp.ClientSession() as s, s.put(f"{self.url}/desired", data=desired.to_json()) as r:
            assert r.status == 202, await r.text()
        wanted = ReplicaState.SERVING if role is Role.SERVE else ReplicaState.PREWARMED
        for _ in range(500):
            state = await self.state()
            if state.observed_generation == self.generation and all(
                r.state is wanted for r in state.replicas
            ):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"worker {self.url} did not converge: {state}")

    async def state(self) -> ObservedState:
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}/state") as r:
            return ObservedState.from_dict(await r.json())

    def crash(self) -> None:
        """Break every open connection, as a dying worker process would."""
        for handler in self.runner.server.connections if self.runner.server else ():
            if handler.transport is not None:
                handler.transport.abort()

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_worker(name: str, gpus: int = 2, speed: float = 0.0) -> RunningWorker:
    sock = bound_socket()
    url = url_of(sock)
    config = WorkerConfig(name=name, gpus=gpus, gpu_memory_bytes=1 << 30, endpoint=url)
    runtime = WorkerRuntime(config, FakeEngine(gpu_profile("h100"), speed=speed))
    runner = web.AppRunner(create_app(runtime), handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return RunningWorker(url, runner, runtime)


@dataclass
class RunningGateway:
    url: str
    gateway: Gateway
    runner: web.AppRunner


async def start_gateway(
    config: GatewayConfig, kube_api: kubernetes.client.ApiClient | None = None
) -> RunningGateway:
    sock = bound_socket()
    gateway = Gateway(config, kube_api)
    runner = web.AppRunner(gateway.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return RunningGateway(url_of(sock), gateway, runner)


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    """Poll ``predicate()`` (sync or async) until it is true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        value = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def cleanup() -> AsyncIterator[list[web.AppRunner]]:
    """Runners to clean up after the test, last started first."""
    runners: list[web.AppRunner] = []
    yield runners
    for runner in reversed(runners):
        await runner.cleanup()
