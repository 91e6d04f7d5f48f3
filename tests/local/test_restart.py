"""``warmserve local`` keeps its processes running as a Deployment would: a worker or the gateway killed
with SIGKILL is started again (after the backoff's first pause), on the same port, and serves again."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from warmserve.local.policies import ActionCounts, policy
from warmserve.local.processes import RESTART_BACKOFF, Children, ChildSpec, Supervisor, free_port
from warmserve.local.runner import local_cluster

from .conftest import FAST

ONE_WORKER = replace(FAST, workers=1)  # the killed worker is the only one: serving again proves it is back


async def completes(gateway: str, model: str) -> bool:
    body = {"model": model, "prompt": "Hello there", "max_tokens": 3}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway}/v1/completions", json=body, timeout=aiohttp.ClientTimeout(total=30)) as r,
    ):
        return r.status == 200 and len((await r.json())["choices"][0]["text"]) > 0


async def wait_restarted(supervisor: Supervisor, name: str, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while supervisor.restarts[name] < count:
        assert time.monotonic() < deadline, f"{name} not started again in {timeout_s} s"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_killed_worker_and_gateway_come_back_and_serve_again(tmp_path: Path) -> None:
    async with local_cluster(ONE_WORKER, policy("no-forecast"), None, tmp_path, ActionCounts()) as local:
        gateway = local.endpoints.gateway
        assert await completes(gateway, "m-a")
        for victim in ("w0", "gateway"):
            old = local.children.procs[victim].pid
            killed = time.monotonic()
            local.children.kill(victim)
            await wait_restarted(local.supervisor, victim, 1)
            assert local.children.procs[victim].pid != old
            assert time.monotonic() - killed >= RESTART_BACKOFF.delay(0)  # after the first pause
            assert await completes(gateway, "m-a") and await completes(gateway, "m-b")


async def test_exits_in_a_row_back_off_and_a_stopping_run_starts_nothing(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/readyz"
    crashing = ChildSpec("crash", (sys.executable, "-c", "raise SystemExit(3)"), url)
    with Children(tmp_path, grace_s=0.5) as children:
        children.start(crashing)
        supervisor = Supervisor(children, replace(RESTART_BACKOFF, initial=0.2, maximum=0.4), poll_s=0.02)
        watch = asyncio.create_task(supervisor.run())
        await asyncio.sleep(1.5)  # pauses 0.2, 0.4, 0.4, ...: about 3 starts, never the 30 of no backoff
        assert 2 <= supervisor.exits["crash"] <= 6 and supervisor.restarts["crash"] == 0  # never ready
        children.stop_all()
        exits = supervisor.exits["crash"]
        await asyncio.sleep(0.5)
        assert supervisor.exits["crash"] <= exits + 1  # one seen as the run stopped; none started since
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
