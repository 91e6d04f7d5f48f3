"""KV space and the shared batching scheduler: invariants and failure handling."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmserve.protocol.errors import InvalidFieldError, UnavailableError
from warmserve.protocol.state import ModelSpec
from warmserve.worker.engines.base import GenerateRequest, Prepared, TokenEvent
from warmserve.worker.engines.batching import BatchingInstance, Sequence
from warmserve.worker.engines.kv_space import KvRange, KvSpace


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5000)), max_size=60))
def test_ranges_never_overlap_stay_inside_and_are_aligned(ops: list[tuple[bool, int]]) -> None:
    space = KvSpace(20_000, alignment=64)
    live: list[KvRange] = []
    for allocate, n in ops:
        if allocate or not live:
            taken = space.allocate(n)
            if taken is None:
                assert not fits_somewhere(live, n, space.capacity, 64)
            else:
                live.append(taken)
        else:
            space.free(live.pop(n % len(live)))
        spans = sorted((r.offset, r.offset + r.nbytes) for r in live)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
        assert all(start % 64 == 0 and end <= space.capacity for start, end in spans)
        assert space.used_bytes == sum(r.nbytes for r in live)


def fits_somewhere(live: list[KvRange], n: int, capacity: int, alignment: int) -> bool:
    """Whether some aligned start leaves n free bytes before the next range (or the end)."""
    spans = sorted((r.offset, r.offset + r.nbytes) for r in live)
    starts = [0] + [-(-end // alignment) * alignment for _, end in spans]
    for start in starts:
        following = [s for s, _ in spans if s >= start]
        overlapped = any(s < start < e for s, e in spans)
        if not overlapped and min(following, default=capacity) - start >= n and start + n <= capacity:
            return True
    return False


def test_freeing_everything_gives_the_whole_space_back() -> None:
    space = KvSpace(1000)
    ranges = [space.allocate(100) for _ in range(5)]
    assert space.allocate(1000) is None
    for r in ranges:
        assert r is not None
        space.free(r)
        space.free(r)  # twice is harmless
    assert space.used_bytes == 0 and space.allocate(1000) == KvRange(0, 1000)


class Exploding(BatchingInstance[Sequence]):
    """An engine whose second iteration fails, to check that only its requests fail and KV is freed."""

    def __init__(self) -> None:
        super().__init__(Prepared(ModelSpec("m", "/w", 1), 1, 10), kv_bytes=1000, max_batch=4)
        self.iterations = 0

    def _open(self, request: GenerateRequest) -> Sequence:
        return Sequence(request, prompt_tokens=1)

    async def _iterate(self, joining: list[Sequence], decoding: list[Sequence]) -> list[TokenEvent]:
        self.iterations += 1
        await asyncio.sleep(0)
        if self.iterations == 2:
            raise RuntimeError("device lost")
        return [
            TokenEvent(1, "x", s.generated, 1, "length" if s.generated + 1 == s.request.max_tokens else None)
            for s in (*joining, *decoding)
        ]


async def test_a_failing_iteration_fails_its_requests_and_frees_their_kv() -> None:
    instance = Exploding()
    stream = instance.generate(GenerateRequest((1,), max_tokens=5))
    assert (await anext(stream)).index == 0
    with pytest.raises(RuntimeError, match="device lost"):
        await anext(stream)
    assert (instance.inflight, instance.kv_used_bytes) == (0, 0)
    events = [e async for e in instance.generate(GenerateRequest((1,), max_tokens=2))]
    assert [e.index for e in events] == [0, 1]  # the instance keeps serving


class Counting(Exploding):
    """Counts one token per prompt id, so a test chooses the prompt's length."""

    def _open(self, request: GenerateRequest) -> Sequence:
        return Sequence(request, prompt_tokens=len(request.prompt))


@pytest.mark.parametrize(
    ("prompt_tokens", "max_tokens", "field"), [(100, 1, "prompt"), (60, 50, "max_tokens")]
)
async def test_a_request_over_the_kv_space_names_what_is_too_long(
    prompt_tokens: int, max_tokens: int, field: str
) -> None:
    """The KV space holds 100 tokens: a prompt that alone fills it is the prompt's fault, not max_tokens'."""
    stream = Counting().generate(GenerateRequest(tuple(range(prompt_tokens)), max_tokens=max_tokens))
    with pytest.raises(InvalidFieldError) as refused:
        await anext(stream)
    assert refused.value.field == field


async def test_a_request_that_fits_only_the_unlent_space_is_temporary_not_bad_input() -> None:
    """While 60 of its 100 tokens of KV are lent, a 50-token request cannot start, but it is not the client's
    fault: it is told to retry (503), and once the space is given back it is served."""
    instance = Counting()
    assert instance.resize_kv(400)  # 40 tokens mapped, 60 lent
    request = GenerateRequest(tuple(range(10)), max_tokens=40)
    with pytest.raises(UnavailableError, match="lent to prewarmed models"):
        await anext(instance.generate(request))
    assert instance.resize_kv(1000)  # lending taken back
    assert (await anext(instance.generate(request))).index == 0
