"""The fake engine: timing-model delays scaled by speed, the cap B, KV accounting, cancellation."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from warmserve.protocol.errors import InvalidFieldError, UnavailableError
from warmserve.protocol.state import ModelSpec
from warmserve.worker.engines.base import GenerateRequest, Instance, TokenEvent
from warmserve.worker.engines.fake import FakeEngine
from warmserve.worker.timing import Iteration, Tier, gpu_profile, iteration_seconds, model_shape

# An A100 whose iterations cost a visible 20 ms more, so wall-clock checks are robust on a busy machine.
SLOW_A100 = dataclasses.replace(gpu_profile("a100"), step_overhead_s=0.02, promotion_s=0.03)
SPEC = ModelSpec(
    "llama", "/weights/llama", 13_476_831_232, engine_args={"shape": "llama2-7b"}, max_concurrency=2
)
KV_PER_TOKEN = model_shape("llama2-7b").kv_bytes_per_token


async def serve(
    speed: float = 0.0, kv_tokens: int = 10_000, spec: ModelSpec = SPEC
) -> tuple[FakeEngine, Instance]:
    engine = FakeEngine(SLOW_A100, speed=speed)
    prepared = await engine.prepare(spec, None, None)
    return engine, await engine.promote(prepared, None, kv_tokens * KV_PER_TOKEN)


async def collect(instance: Instance, request: GenerateRequest) -> list[TokenEvent]:
    return [event async for event in instance.generate(request)]


async def test_streams_synthetic_tokens_reproducibly() -> None:
    _, instance = await serve()
    events = await collect(instance, GenerateRequest((1, 2, 3), max_tokens=5, seed=7))
    assert [e.index for e in events] == [0, 1, 2, 3, 4]
    assert [e.finish_reason for e in events] == [None, None, None, None, "length"]
    assert all(e.prompt_tokens == 3 and e.text == f" w{e.token_id}" for e in events)
    again = await collect(instance, GenerateRequest((1, 2, 3), max_tokens=5, seed=7))
    other = await collect(instance, GenerateRequest((1, 2, 3), max_tokens=5, seed=8))
    assert [e.token_id for e in again] == [e.token_id for e in events] != [e.token_id for e in other]
    assert (instance.inflight, instance.kv_used_bytes) == (0, 0)


async def test_a_stop_string_ends_the_stream_and_is_cut_off() -> None:
    _, instance = await serve()
    tokens = await collect(instance, GenerateRequest("a b", max_tokens=4, seed=1))
    stop = tokens[2].text  # the third token's text, e.g. " w123"
    events = await collect(instance, GenerateRequest("a b", max_tokens=4, seed=1, stop=(stop,)))
    assert events[-1].finish_reason == "stop" and len(events) == 3
    assert "".join(e.text for e in events) == tokens[0].text + tokens[1].text


@pytest.mark.parametrize("speed", [1.0, 0.5])
async def test_delays_follow_the_timing_model_scaled_by_speed(speed: float) -> None:
    _, instance = await serve(speed)
    shape, tp = model_shape("llama2-7b"), 1
    predicted = iteration_seconds(shape, SLOW_A100, tp, Iteration(prefill_tokens=(100,))) + sum(
        iteration_seconds(shape, SLOW_A100, tp, Iteration(decode_contexts=(100 + i,))) for i in range(1, 4)
    )
    start = time.perf_counter()
    events = await collect(instance, GenerateRequest(tuple(range(100)), max_tokens=4))
    elapsed = time.perf_counter() - start
    assert len(events) == 4
    assert predicted * speed <= elapsed < predicted * speed + 0.05


async def test_prepare_plays_the_load_and_promote_the_promotion() -> None:
    slow_disk = dataclasses.replace(SLOW_A100, disk_bandwidth=SPEC.weight_bytes / 0.1, host_bandwidth=1e15)
    engine = FakeEngine(slow_disk, speed=1.0, tier=Tier.DISK)
    start = time.perf_counter()
    prepared = await engine.prepare(SPEC, None, None)
    loaded = time.perf_counter()
    instance = await engine.promote(prepared, None, KV_PER_TOKEN * 100)
    promoted = time.perf_counter()
    assert 0.1 <= loaded - start < 0.18
    assert 0.03 <= promoted - loaded < 0.08
    assert (prepared.weight_bytes, prepared.kv_bytes_per_token) == (SPEC.weight_bytes, KV_PER_TOKEN)
    assert instance.kv_total_bytes == KV_PER_TOKEN * 100


async def test_at_most_b_requests_run_at_once() -> None:
    _, instance = await serve(speed=1.0)  # B = 2, every iteration >= 20 ms
    request = GenerateRequest((1,), max_tokens=3)
    start = time.perf_counter()
    runs = [asyncio.create_task(collect(instance, request)) for _ in range(4)]
    await asyncio.sleep(0.01)
    assert instance.inflight == 4
    assert instance.kv_used_bytes == 2 * 4 * KV_PER_TOKEN  # two admitted, each reserving 1 + 3 tokens
    results = await asyncio.gather(*runs)
    assert all(len(r) == 3 for r in results)
    assert time.perf_counter() - start >= 6 * 0.02  # two rounds of three iterations, never four at once


async def test_a_request_waits_for_kv_space_and_never_overcommits() -> None:
    _, instance = await serve(speed=1.0, kv_tokens=5)  # room for one (1 + 4)-token request at a time
    peak = 0

    async def watch(request: GenerateRequest) -> None:
        nonlocal peak
        async for _ in instance.generate(request):
            peak = max(peak, instance.kv_used_bytes)

    await asyncio.gather(*(watch(GenerateRequest((1,), max_tokens=4)) for _ in range(3)))
    assert peak == 5 * KV_PER_TOKEN


async def test_closing_a_stream_cancels_and_frees_its_kv() -> None:
    _, instance = await serve(speed=1.0)
    stream = instance.generate(GenerateRequest((1, 2), max_tokens=50))
    first = await anext(stream)
    assert first.index == 0 and instance.kv_used_bytes == 52 * KV_PER_TOKEN
    await stream.aclose()
    assert (instance.inflight, instance.kv_used_bytes) == (0, 0)


async def test_cancelling_a_waiting_request_drops_it_from_the_queue() -> None:
    _, instance = await serve(speed=1.0, kv_tokens=3)
    running = asyncio.create_task(collect(instance, GenerateRequest((1,), max_tokens=2)))
    waiting = asyncio.create_task(collect(instance, GenerateRequest((1,), max_tokens=2)))
    await asyncio.sleep(0.005)
    assert instance.inflight == 2
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert instance.inflight == 1
    assert len(await running) == 2
    assert (instance.inflight, instance.kv_used_bytes) == (0, 0)


async def test_demote_needs_a_drained_instance_and_promote_again_serves() -> None:
    engine, instance = await serve()
    stream = instance.generate(GenerateRequest((1,), max_tokens=10))
    await anext(stream)
    with pytest.raises(UnavailableError, match="in flight"):
        await engine.demote(instance)
    await stream.aclose()
    prepared = await engine.demote(instance)
    with pytest.raises(UnavailableError, match="demoted"):
        await collect(instance, GenerateRequest((1,)))
    again = await engine.promote(prepared, None, 100 * KV_PER_TOKEN)
    assert len(await collect(again, GenerateRequest((1,), max_tokens=2))) == 2


async def test_bad_input_names_the_field() -> None:
    engine, instance = await serve(kv_tokens=10)
    with pytest.raises(InvalidFieldError) as too_long:
        await collect(instance, GenerateRequest((1, 2), max_tokens=9))
    assert too_long.value.field == "max_tokens"
    assert instance.inflight == 0
    with pytest.raises(InvalidFieldError) as kv:
        await engine.promote(await engine.prepare(SPEC, None, None), None, 0)
    assert kv.value.field == "kv_bytes"
    with pytest.raises(InvalidFieldError) as speed:
        FakeEngine(SLOW_A100, speed=-1)
    assert speed.value.field == "speed"
    with pytest.raises(InvalidFieldError) as shape:
        await engine.prepare(ModelSpec("x", "/w", 10), None, None)
    assert shape.value.field == "spec.kv_bytes_per_token"
    for field, kwargs in [
        ("prompt", {"prompt": ""}),
        ("max_tokens", {"max_tokens": 0}),
        ("top_p", {"top_p": 0}),
    ]:
        with pytest.raises(InvalidFieldError) as bad:
            GenerateRequest(**{"prompt": "x", **kwargs})  # type: ignore[arg-type]
        assert bad.value.field == field
