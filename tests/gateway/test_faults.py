"""Worker failures, cancellation and discovery changes, against real worker servers (fake engine)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from tests.gateway.conftest import RunningGateway, RunningWorker, start_gateway, start_worker, wait_for
from tests.promtool import assert_promtool_passes, needs_promtool
from warmserve.gateway.config import DeclaredModel, GatewayConfig
from warmserve.protocol.state import Role

#: Long enough that discovery never refreshes during a test that needs a stale table.
SLOW_POLL = 60.0


async def _two_workers(
    cleanup: list[web.AppRunner], poll_s: float = SLOW_POLL, speed: float = 0.0, hold_s: float = 5.0
) -> tuple[RunningWorker, RunningWorker, RunningGateway]:
    workers = []
    for name in ("a", "b"):
        worker = await start_worker(name, gpus=1, speed=speed)
        cleanup.append(worker.runner)
        await worker.serve({f"{name}1": "m"}, {"m": 1})
        workers.append(worker)
    urls = tuple(w.url for w in workers)
    config = GatewayConfig((DeclaredModel("m", 1),), urls, poll_interval_s=poll_s, hold_timeout_s=hold_s)
    gateway = await start_gateway(config)
    cleanup.append(gateway.runner)
    await wait_for(lambda: len(gateway.gateway.router.table.get("m", ())) == 2)
    return workers[0], workers[1], gateway


def _retries(gw: RunningGateway) -> float:
    value = gw.gateway.metrics.registry.get_sample_value(
        "warmserve_gateway_upstream_retries_total", {"model": "m"}
    )
    return value or 0.0


async def _complete(url: str, **extra: object) -> int:
    body = {"model": "m", "prompt": "x", "max_tokens": 4, **extra}
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/completions", json=body) as r:
        await r.read()
        return r.status


async def test_a_dead_worker_is_retried_on_another_instance(cleanup: list[web.AppRunner]) -> None:
    a, _, gw = await _two_workers(cleanup)
    await a.stop()  # the gateway's table still lists it: requests sent there find no one
    assert list(await asyncio.gather(_complete(gw.url), _complete(gw.url))) == [200, 200]
    assert _retries(gw) == 1


async def test_a_replica_gone_from_its_worker_404_is_retried_elsewhere(cleanup: list[web.AppRunner]) -> None:
    a, _, gw = await _two_workers(cleanup)
    a.generation += 1
    await a.serve({}, {})  # the worker drops its replica and answers 404 for it
    assert list(await asyncio.gather(_complete(gw.url, stream=True), _complete(gw.url))) == [200, 200]
    assert _retries(gw) == 1


async def test_a_replica_refusing_while_it_switches_serves_the_request_once_promoted_again(
    cleanup: list[web.AppRunner],
) -> None:
    """A request sent to an instance being demoted is refused (503) and held; when the same replica is
    promoted again it is a new instance, and the held request goes there (not a 503 at the deadline)."""
    worker = await start_worker("a", gpus=1)
    cleanup.append(worker.runner)
    await worker.serve({"a1": "m"}, {"m": 1})
    models = (DeclaredModel("m", 1),)
    config = GatewayConfig(models, (worker.url,), poll_interval_s=SLOW_POLL, hold_timeout_s=5.0)
    gw = await start_gateway(config)
    cleanup.append(gw.runner)
    await wait_for(lambda: len(gw.gateway.router.table.get("m", ())) == 1)
    await worker.serve({"a1": "m"}, {"m": 1}, role=Role.PREWARM)  # the gateway's table still lists it
    request = asyncio.create_task(_complete(gw.url, stream=True))
    await wait_for(lambda: _retries(gw) == 1)  # refused by the worker, now held
    await worker.serve({"a1": "m"}, {"m": 1})
    gw.gateway.set_workers([worker.url])  # discovery polls now rather than at its next interval
    assert await asyncio.wait_for(request, timeout=3.0) == 200


async def test_all_instances_failing_ends_in_503_at_the_deadline(cleanup: list[web.AppRunner]) -> None:
    a, b, gw = await _two_workers(cleanup, hold_s=0.3)
    await a.stop()
    await b.stop()
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.url + "/v1/completions", json={"model": "m", "prompt": "x"}) as r,
    ):
        assert r.status == 503 and r.headers["Retry-After"]
        assert (await r.json())["error"]["type"] == "server_error"


async def test_a_stream_broken_midway_ends_with_an_error_event_and_is_never_replayed(
    cleanup: list[web.AppRunner],
) -> None:
    a, b, gw = await _two_workers(cleanup, speed=10.0)
    body = {"model": "m", "prompt": "x", "max_tokens": 200, "stream": True}
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/completions", json=body) as r:
        first = await r.content.readuntil(b"\n\n")
        for worker in (a, b):
            worker.crash()
        rest = await r.content.read()
    events = [e.removeprefix(b"data: ") for e in (first + rest).split(b"\n\n") if e]
    assert b"[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["code"] == "upstream_failed"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1  # one upstream response, never a second one spliced in
    assert 1 <= len(chunks) < 200
    assert _retries(gw) == 0


@pytest.mark.parametrize("stream", [True, False])
async def test_client_cancellation_reaches_the_worker(cleanup: list[web.AppRunner], stream: bool) -> None:
    worker = await start_worker("w", gpus=1, speed=10.0)
    cleanup.append(worker.runner)
    await worker.serve({"r1": "m"}, {"m": 2})
    gateway = await start_gateway(
        GatewayConfig((DeclaredModel("m", 2),), (worker.url,), poll_interval_s=0.05)
    )
    cleanup.append(gateway.runner)
    await wait_for(lambda: gateway.gateway.router.table.get("m"))
    body = {"model": "m", "prompt": "x", "max_tokens": 500, "stream": stream}  # ~20 s if not cancelled
    with pytest.raises(TimeoutError):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as s,
            s.post(gateway.url + "/v1/completions", json=body) as r,
        ):
            await r.read()

    async def worker_idle() -> bool:
        return all(r.inflight == 0 for r in (await worker.state()).replicas)

    await wait_for(worker_idle, timeout=2.0)
    await wait_for(lambda: gateway.gateway.router.demand()["m"].inflight == 0, timeout=2.0)


async def test_discovery_follows_workers_going_down_and_being_added(cleanup: list[web.AppRunner]) -> None:
    a, b, gw = await _two_workers(cleanup, poll_s=0.05)
    await a.stop()
    await wait_for(lambda: [i.worker for i in gw.gateway.router.table.get("m", ())] == [b.url])
    gw.gateway.set_workers([])
    assert gw.gateway.router.table == {}  # removed workers leave at once
    gw.gateway.set_workers([b.url])
    await wait_for(lambda: len(gw.gateway.router.table.get("m", ())) == 1)
    assert await _complete(gw.url) == 200


@needs_promtool
async def test_metrics_pass_promtool(cleanup: list[web.AppRunner]) -> None:
    _, _, gw = await _two_workers(cleanup)
    assert await _complete(gw.url, stream=True) == 200
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/metrics") as r:
        text = await r.read()
    assert_promtool_passes(text)
    assert b"warmserve_gateway_arrivals_total" in text


async def test_a_client_that_gives_up_while_held_leaves_the_queue(cleanup: list[web.AppRunner]) -> None:
    gateway = await start_gateway(GatewayConfig((DeclaredModel("m", 1),), (), hold_timeout_s=30.0))
    cleanup.append(gateway.runner)
    with pytest.raises(TimeoutError):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as s,
            s.post(gateway.url + "/v1/completions", json={"model": "m", "prompt": "x"}) as r,
        ):
            await r.read()
    await wait_for(lambda: gateway.gateway.router.demand()["m"].queued == 0, timeout=2.0)
    assert gateway.gateway.router.demand()["m"].arrivals_total == 1
