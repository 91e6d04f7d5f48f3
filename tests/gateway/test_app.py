"""The gateway over HTTP, in front of real worker servers (fake engine): the OpenAI surface and its faults."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from tests.gateway.conftest import RunningGateway, RunningWorker, start_gateway, start_worker, wait_for
from warmserve.gateway.config import DeclaredModel, GatewayConfig
from warmserve.protocol.demand_report import parse_demand
from warmserve.protocol.openai_api import MAX_TOKENS_LIMIT

FAST_POLL = 0.05


async def _setup(
    cleanup: list[web.AppRunner],
    replicas: dict[str, str],
    caps: dict[str, int],
    *,
    declared: tuple[DeclaredModel, ...] | None = None,
    speed: float = 0.0,
    **config: Any,
) -> tuple[RunningWorker, RunningGateway]:
    worker = await start_worker("w1", gpus=max(len(replicas), 1), speed=speed)
    cleanup.append(worker.runner)
    if replicas:
        await worker.serve(replicas, caps)
    models = declared or tuple(DeclaredModel(m, b) for m, b in caps.items())
    gateway = await start_gateway(
        GatewayConfig(models, workers=(worker.url,), poll_interval_s=FAST_POLL, **config)
    )
    cleanup.append(gateway.runner)
    await wait_for(lambda: sum(map(len, gateway.gateway.router.table.values())) == len(replicas))
    return worker, gateway


async def _post(url: str, body: object, path: str = "/v1/completions") -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s, s.post(url + path, data=data, headers=headers) as r:
        return r.status, dict(r.headers), await r.json()


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200
        return await r.json()


async def test_models_lists_every_declared_model_even_at_zero_instances(cleanup: list[web.AppRunner]) -> None:
    declared = (DeclaredModel("m", 2), DeclaredModel("idle", 2))
    _, gw = await _setup(cleanup, {"r1": "m"}, {"m": 2}, declared=declared)
    body = await _get_json(gw.url + "/v1/models")
    assert [entry["id"] for entry in body["data"]] == ["m", "idle"]


async def test_the_openai_client_gets_completions_and_chat_streamed_and_not(
    cleanup: list[web.AppRunner],
) -> None:
    _, gw = await _setup(cleanup, {"r1": "m", "r2": "m"}, {"m": 4})
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    async with client:
        done = await client.completions.create(model="m", prompt="hello", max_tokens=5)
        assert done.model == "m" and done.usage is not None and done.usage.completion_tokens == 5
        chat = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert chat.choices[0].message.content
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices[0].delta.content]
        assert len(pieces) == 6
    demand = parse_demand(await _get_json(gw.url + "/demand"))
    assert demand["m"].arrivals_total == 3 and demand["m"].inflight == 0 and demand["m"].queued == 0
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/metrics") as r:
        text = await r.text()
    assert 'warmserve_gateway_time_to_first_token_seconds_count{model="m"} 1.0' in text
    assert 'warmserve_gateway_time_per_output_token_seconds_count{model="m"} 1.0' in text
    assert 'warmserve_gateway_requests_total{model="m",status="200"} 3.0' in text


async def test_a_streamed_completion_is_passed_through_event_by_event(cleanup: list[web.AppRunner]) -> None:
    _, gw = await _setup(cleanup, {"r1": "m"}, {"m": 4})
    body = {"model": "m", "prompt": "x", "max_tokens": 8, "stream": True}
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/completions", json=body) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        raw = await r.read()
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert sum(1 for c in chunks if c["choices"][0]["text"]) == 8
    assert len({c["id"] for c in chunks}) == 1


@pytest.mark.parametrize(
    ("body", "path", "param"),
    [
        (b"{not json", "/v1/completions", "body"),
        (b'{"model": "m", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}", "/v1/completions", "body"),
        (b"[" * 100_000 + b"]" * 100_000, "/v1/completions", "body"),
        (b'{"model": "m", "prompt": "' + bytes([0xFF, 0xFE]) + b'"}', "/v1/completions", "body"),
        ({"prompt": "x"}, "/v1/completions", "model"),
        ({"model": "m"}, "/v1/completions", "prompt"),
        ({"model": "m", "prompt": ""}, "/v1/completions", "prompt"),
        ({"model": "m", "prompt": "x", "n": 3}, "/v1/completions", "n"),
        ({"model": "m", "prompt": "x", "n": -1}, "/v1/completions", "n"),
        ({"model": "m", "prompt": "x", "n": "x"}, "/v1/completions", "n"),
        ({"model": "m", "prompt": "x", "best_of": 2}, "/v1/completions", "best_of"),
        ({"model": "m", "prompt": "x", "echo": True}, "/v1/completions", "echo"),
        ({"model": "m", "prompt": "x", "logprobs": 2}, "/v1/completions", "logprobs"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{}]},
            "/v1/chat/completions",
            "tools",
        ),
        ({"model": "m", "prompt": [""]}, "/v1/completions", "prompt"),
        ({"model": "m", "messages": []}, "/v1/chat/completions", "messages"),
        ({"model": "m", "prompt": "x", "max_tokens": MAX_TOKENS_LIMIT + 1}, "/v1/completions", "max_tokens"),
        ({"model": "m", "prompt": "x", "max_tokens": -5}, "/v1/completions", "max_tokens"),
    ],
)
async def test_bad_requests_are_400_naming_the_field(
    cleanup: list[web.AppRunner], body: object, path: str, param: str
) -> None:
    _, gw = await _setup(cleanup, {}, {"m": 2})
    status, _, answer = await _post(gw.url, body, path)
    assert status == 400
    assert answer["error"]["param"] == param and answer["error"]["type"] == "invalid_request_error"
    assert parse_demand(await _get_json(gw.url + "/demand"))["m"].arrivals_total == 0


async def test_an_unknown_model_is_404_in_openai_format(cleanup: list[web.AppRunner]) -> None:
    _, gw = await _setup(cleanup, {"r1": "m"}, {"m": 2})
    status, _, answer = await _post(gw.url, {"model": "nope", "prompt": "x"})
    assert status == 404
    assert answer["error"]["code"] == "model_not_found" and answer["error"]["param"] == "model"


async def test_a_model_at_zero_instances_is_held_then_served_when_one_appears(
    cleanup: list[web.AppRunner],
) -> None:
    worker, gw = await _setup(cleanup, {}, {"m": 2}, hold_timeout_s=10.0)
    pending = asyncio.create_task(_post(gw.url, {"model": "m", "prompt": "x", "max_tokens": 3}))
    await wait_for(lambda: gw.gateway.router.demand()["m"].queued == 1)
    assert parse_demand(await _get_json(gw.url + "/demand"))["m"].queued == 1
    await worker.serve({"r1": "m"}, {"m": 2})
    status, _, answer = await asyncio.wait_for(pending, 5)
    assert status == 200 and answer["usage"]["completion_tokens"] == 3


async def test_held_requests_get_503_with_retry_after_at_the_deadline(cleanup: list[web.AppRunner]) -> None:
    _, gw = await _setup(cleanup, {}, {"m": 2}, hold_timeout_s=0.2, retry_after_s=7)
    start = time.monotonic()
    status, headers, answer = await _post(gw.url, {"model": "m", "prompt": "x"})
    assert status == 503 and headers["Retry-After"] == "7"
    assert answer["error"]["code"] == "no_capacity" and answer["error"]["type"] == "server_error"
    assert 0.15 < time.monotonic() - start < 3


async def test_overload_is_refused_at_once_with_bounded_queues(cleanup: list[web.AppRunner]) -> None:
    _, gw = await _setup(cleanup, {}, {"m": 2}, hold_timeout_s=0.3, queue_limit=3)
    start = time.monotonic()
    results = await asyncio.gather(*(_post(gw.url, {"model": "m", "prompt": "x"}) for _ in range(10)))
    codes = sorted(answer["error"]["code"] for _, _, answer in results)
    assert codes == ["no_capacity"] * 3 + ["queue_full"] * 7
    assert all(status == 503 and "Retry-After" in headers for status, headers, _ in results)
    assert time.monotonic() - start < 5


async def test_requests_beyond_b_wait_for_a_free_slot_and_all_succeed(cleanup: list[web.AppRunner]) -> None:
    _, gw = await _setup(cleanup, {"r1": "m"}, {"m": 2}, speed=1.0)
    body = {"model": "m", "prompt": "x", "max_tokens": 20}
    tasks = [asyncio.create_task(_post(gw.url, body)) for _ in range(6)]
    await wait_for(lambda: gw.gateway.router.demand()["m"].queued > 0)
    assert gw.gateway.router.demand()["m"].inflight <= 2
    assert [status for status, _, _ in await asyncio.gather(*tasks)] == [200] * 6


async def test_a_body_that_is_not_declared_json_is_a_400_naming_content_type(
    cleanup: list[web.AppRunner],
) -> None:
    _, gw = await _setup(cleanup, {"r1": "m"}, {"m": 2})
    body = json.dumps({"model": "m", "prompt": "hi", "max_tokens": 2})
    plain = {"Content-Type": "text/plain"}
    url = f"{gw.url}/v1/completions"
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=plain) as r:
        answer = await r.json()
        assert r.status == 400 and answer["error"]["param"] == "Content-Type", answer
    assert parse_demand(await _get_json(gw.url + "/demand"))["m"].arrivals_total == 0


async def test_token_ids_beyond_the_vocabulary_are_the_workers_400_naming_the_token(
    cleanup: list[web.AppRunner],
) -> None:
    _, gw = await _setup(cleanup, {"r1": "m"}, {"m": 2})
    status, _, answer = await _post(gw.url, {"model": "m", "prompt": [1, 10**6], "max_tokens": 2})
    assert status == 400 and answer["error"]["param"] == "prompt[1]", answer


async def test_a_stalled_body_is_answered_408_and_the_connection_closed(cleanup: list[web.AppRunner]) -> None:
    _, gw = await _setup(cleanup, {"r1": "m"}, {"m": 2}, body_timeout_s=0.3)
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: 100\r\n\r\n{{".encode())
        await writer.drain()
        async with asyncio.timeout(10):  # the answer is one write; the gateway then ignores the rest a while
            answer = await reader.read(65536)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"Connection: close" in answer, answer[:200]
    assert parse_demand(await _get_json(gw.url + "/demand"))["m"].arrivals_total == 0
