"""The simulated instance batches and times requests exactly as the engines' continuous batching does:
checked against a plain per-iteration reference of the same rules, timed by the timing model itself."""

from __future__ import annotations

import math
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warmserve.sim.batch_cost import Costing
from warmserve.sim.instance import SimInstance
from warmserve.worker.engines.kv_space import KvSpace
from warmserve.worker.timing import GPU_PROFILES, MODEL_SHAPES, Iteration, iteration_seconds

SHAPE, GPU = MODEL_SHAPES["llama2-7b"], GPU_PROFILES["h100"]
KV = SHAPE.kv_bytes_per_token


def reference(arrivals: list[float], prompts: list[int], outputs: list[int], b: int, kv_bytes: int):  # type: ignore[no-untyped-def]
    """One iteration at a time, as BatchingInstance._schedule runs: admit the head while < B run and its
    KV fits, iterate (joiners prefill, others decode), retire finished ones."""
    first, finish = [math.nan] * len(arrivals), [math.nan] * len(arrivals)
    space, waiting, running = KvSpace(kv_bytes), deque[int](), []
    ranges, generated = {}, {}
    now, nxt = 0.0, 0
    while nxt < len(arrivals) or waiting or running:
        if not waiting and not running:
            now = max(now, arrivals[nxt])
        while nxt < len(arrivals) and arrivals[nxt] <= now:
            waiting.append(nxt)
            nxt += 1
        while waiting and len(running) < b:
            kv = space.allocate((prompts[waiting[0]] + outputs[waiting[0]]) * KV)
            if kv is None:
                break
            rid = waiting.popleft()
            ranges[rid], generated[rid] = kv, 0
            running.append(rid)
        joining = [r for r in running if generated[r] == 0]
        decoding = [r for r in running if generated[r] > 0]
        step = Iteration(
            tuple(prompts[r] for r in joining), tuple(prompts[r] + generated[r] for r in decoding)
        )
        now += iteration_seconds(SHAPE, GPU, 1, step)
        for r in joining + decoding:
            generated[r] += 1
            if generated[r] == 1:
                first[r] = now
            if generated[r] == outputs[r]:
                finish[r] = now
                running.remove(r)
                space.free(ranges.pop(r))
    return first, finish


def simulate(arrivals: list[float], prompts: list[int], outputs: list[int], b: int, kv_bytes: int):  # type: ignore[no-untyped-def]
    inst = SimInstance(Costing(SHAPE, GPU, 1), b, kv_bytes, KV, prompts, outputs)
    first, finish = [math.nan] * len(arrivals), [math.nan] * len(arrivals)
    nxt = finished = 0
    while nxt < len(arrivals) or inst.seg_end < math.inf:
        # the engines' in-flight count: every request queued and not finished, being prefilled included
        assert inst.inflight == nxt - finished
        if nxt < len(arrivals) and arrivals[nxt] <= inst.seg_end:
            assert inst.enqueue(nxt, arrivals[nxt])
            nxt += 1
            continue
        now = inst.seg_end
        started, done = inst.complete(now)
        for r in started:
            first[r] = now
        for r in done:
            finish[r] = now
        finished += len(done)
    return first, finish


requests = st.lists(
    st.tuples(st.floats(0, 2.0), st.integers(1, 600), st.integers(1, 40)), min_size=1, max_size=25
)


@settings(max_examples=60, deadline=None)
@given(requests, st.integers(1, 6), st.sampled_from([40, 400, 100_000]))
def test_same_first_tokens_and_finishes_as_per_iteration_batching(
    reqs: list[tuple[float, int, int]], b: int, kv_tokens: int
) -> None:
    reqs = sorted(reqs)
    arrivals = [r[0] for r in reqs]
    prompts = [min(r[1], kv_tokens // 2) or 1 for r in reqs]
    outputs = [max(min(r[2], kv_tokens - p), 1) for r, p in zip(reqs, prompts, strict=True)]
    kv_bytes = kv_tokens * KV
    expected = reference(arrivals, prompts, outputs, b, kv_bytes)
    got = simulate(arrivals, prompts, outputs, b, kv_bytes)
    for want, have in zip(expected, got, strict=True):
        assert have == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_a_request_larger_than_the_kv_space_is_refused() -> None:
    inst = SimInstance(Costing(SHAPE, GPU, 1), 4, 100 * KV, KV, [90], [20])
    assert not inst.enqueue(0, 0.0)
    assert inst.inflight == 0 and inst.seg_end == math.inf


def run_with_resize(resize_at: float | None) -> tuple[float, float]:
    """Two long requests in a KV space that holds one; optionally grown to hold both at ``resize_at``.
    Returns when request 1 emits its first token and when request 0 finishes."""
    inst = SimInstance(Costing(SHAPE, GPU, 1), 4, 1300 * KV, KV, [1000, 1000], [200, 200])
    assert inst.enqueue(0, 0.0) and inst.enqueue(1, 0.0)
    first1 = finish0 = math.nan
    while inst.seg_end < math.inf:
        if resize_at is not None and resize_at < inst.seg_end:
            inst.resize(2600 * KV, resize_at)
            resize_at = None
            continue
        now = inst.seg_end
        started, done = inst.complete(now)
        first1 = now if 1 in started else first1
        finish0 = now if 0 in done else finish0
    return first1, finish0


def test_growing_the_kv_space_lets_the_waiting_head_join_after_the_iteration_in_progress() -> None:
    blocked_first, finish0 = run_with_resize(None)
    assert blocked_first > finish0  # without room it waits for request 0 to finish
    decode_step = Costing(SHAPE, GPU, 1).decode_run(1, 1001, 1)
    at = 0.5
    first, _ = run_with_resize(at)
    # as the engine's resize_kv admits at once: the iteration in progress ends, the next one prefills it
    assert at < first < at + 2 * decode_step + 0.2
    assert first < finish0
