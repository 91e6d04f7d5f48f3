"""LocalCluster against real worker processes and a real gateway: observe, apply, serve, lose a worker.

The processes are shared by the module; the test that kills a worker is the last one."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from warmserve.local.cluster import LocalCluster
from warmserve.local.policies import policy
from warmserve.local.processes import Children, free_port
from warmserve.local.runner import Endpoints
from warmserve.operator.scheduler import Scheduler, run
from warmserve.protocol.errors import UnavailableError
from warmserve.protocol.state import DesiredState, ReplicaState

from .conftest import FAST


async def test_observe_apply_and_a_held_request_served_after_scale_out(
    processes: tuple[Children, Endpoints],
) -> None:
    _, ends = processes
    async with aiohttp.ClientSession() as session:
        cluster = LocalCluster(session, ends.workers, ends.gateway, ends.control_token)
        first = await cluster.observe()
        assert sorted(first.workers) == ["w0", "w1"] and not any(w.replicas for w in first.workers.values())
        assert {m: (d.inflight, d.queued) for m, d in first.demand.items()} == {"m-a": (0, 0), "m-b": (0, 0)}

        choice = policy("no-forecast")
        scheduler = Scheduler(FAST.model_configs(), choice.step, choice.initial_state)
        loop = asyncio.create_task(run(cluster, scheduler, FAST.tick_s))
        try:
            body = {"model": "m-a", "prompt": "hi", "max_tokens": 3}
            async with session.post(f"{ends.gateway}/v1/completions", json=body) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["usage"]["completion_tokens"] == 3
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
        after = await cluster.observe()
        serving = [r for w in after.workers.values() for r in w.replicas if r.state is ReplicaState.SERVING]
        assert [r.model for r in serving] == ["m-a"]
        assert after.demand["m-a"].inflight == 0
        # one clock: the observation's now and the workers' since are both epoch seconds
        assert 0 <= after.now - serving[0].since < 60


async def test_an_unreadable_gateway_is_unavailable_so_the_tick_is_skipped(
    processes: tuple[Children, Endpoints],
) -> None:
    _, ends = processes
    async with aiohttp.ClientSession() as session:
        cluster = LocalCluster(session, ends.workers, f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
        with pytest.raises(UnavailableError, match="gateway demand unreadable"):
            await cluster.observe()


async def test_a_huge_generation_from_a_writer_without_the_run_s_token_is_refused_and_the_scheduler_goes_on(
    processes: tuple[Children, Endpoints],
) -> None:
    _, ends = processes
    async with aiohttp.ClientSession() as session:
        stray = DesiredState(worker="w0", generation=10**9, models={}, replicas=())
        async with session.put(f"{ends.workers['w0']}/desired", json=stray.to_dict()) as response:
            assert response.status == 401
            assert (await response.json())["error"]["param"] == "Authorization"
        cluster = LocalCluster(session, ends.workers, ends.gateway, ends.control_token)
        choice = policy("no-forecast")
        scheduler = Scheduler(FAST.model_configs(), choice.step, choice.initial_state)
        before = (await cluster.observe()).workers["w0"].observed_generation
        assert before < 10**9
        ours = DesiredState(worker="w0", generation=before + 1, models={}, replicas=())
        assert await cluster.apply({"w0": ours}) == set()
        scheduler.tick(await cluster.observe())
        assert scheduler.last_error == "" and scheduler.generation < 10**9


async def test_a_killed_worker_leaves_the_observation_and_is_reported_unreachable(
    processes: tuple[Children, Endpoints],
) -> None:
    children, ends = processes
    async with aiohttp.ClientSession() as session:
        cluster = LocalCluster(session, ends.workers, ends.gateway, ends.control_token, timeout_s=1.0)
        choice = policy("no-forecast")
        scheduler = Scheduler(FAST.model_configs(), choice.step, choice.initial_state)
        scheduler.tick(await cluster.observe())
        children.kill("w1")
        await asyncio.sleep(0.2)
        seen = await cluster.observe()
        assert sorted(seen.workers) == ["w0"] and "w1" in cluster.lost_at
        scheduler.tick(seen)
        assert scheduler.last_error == ""
        empty = DesiredState(worker="w1", generation=99, models={}, replicas=())
        assert await cluster.apply({"w1": empty}) == {"w1"}
