"""Pool semantics every backend shares: accounting, all-or-nothing maps, reuse, shared chunks, bad input."""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warmserve.protocol.errors import InvalidFieldError, WarmServeError
from warmserve.worker.pool import (
    MemoryPool,
    NoBytesError,
    PoolError,
    PoolExhaustedError,
    create_pool,
)
from warmserve.worker.pool.fake import FakePool

CHUNK = mmap.PAGESIZE * 4


@pytest.fixture(params=["fake", "host"])
def pool(request: pytest.FixtureRequest) -> Iterator[MemoryPool]:
    with create_pool(request.param, 8 * CHUNK, CHUNK) as p:
        yield p


def test_map_widens_to_chunks_and_is_idempotent(pool: MemoryPool) -> None:
    slot = pool.create_slot()
    assert pool.map(slot, CHUNK - 1, 2) == 2  # one byte on each side of a boundary: two chunks
    assert pool.map(slot, 0, 2 * CHUNK) == 0
    assert slot.mapped_chunks == 2
    assert pool.used_bytes == 2 * CHUNK
    assert pool.free_bytes == 6 * CHUNK
    assert pool.usage().slot_chunks == {slot.id: 2}
    assert slot.is_mapped(0, 2 * CHUNK)
    assert not slot.is_mapped(0, 2 * CHUNK + 1)


def test_exhaustion_is_all_or_nothing(pool: MemoryPool) -> None:
    serving, prewarm = pool.create_slot(), pool.create_slot()
    pool.map(serving, 0, 5 * CHUNK)
    pool.map(prewarm, 0, CHUNK)
    before = (pool.usage(), serving.physical_chunks(), prewarm.physical_chunks())
    with pytest.raises(PoolExhaustedError) as info:
        pool.map(prewarm, 0, 5 * CHUNK)  # needs 4 more, 2 free
    assert (info.value.needed_chunks, info.value.free_chunks) == (4, 2)
    assert isinstance(info.value, WarmServeError)
    assert (pool.usage(), serving.physical_chunks(), prewarm.physical_chunks()) == before


def test_unmapped_chunks_are_reused_lowest_first(pool: MemoryPool) -> None:
    a, b = pool.create_slot(), pool.create_slot()
    pool.map(a, 0, 4 * CHUNK)
    assert dict(a.physical_chunks()) == {0: 0, 1: 1, 2: 2, 3: 3}
    assert pool.unmap(a, CHUNK, 2 * CHUNK) == 2
    assert pool.unmap(a, CHUNK, 2 * CHUNK) == 0  # already unmapped: nothing to do
    pool.map(b, 3 * CHUNK, 2 * CHUNK)
    assert dict(b.physical_chunks()) == {3: 1, 4: 2}
    assert pool.free_chunks == 4


def test_shared_chunk_is_freed_only_when_every_mapping_is_gone(pool: MemoryPool) -> None:
    a, b = pool.create_slot(), pool.create_slot()
    pool.map(a, 0, 2 * CHUNK)
    assert pool.share(a, CHUNK, b, 6 * CHUNK, CHUNK) == 1
    assert b.physical_chunks() == {6: a.physical_chunks()[1]}
    assert pool.used_bytes == 2 * CHUNK  # sharing takes no chunk
    pool.unmap(a, 0, 2 * CHUNK)
    assert pool.used_bytes == CHUNK
    pool.unmap(b, 6 * CHUNK, CHUNK)
    assert pool.used_bytes == 0


def test_share_refuses_unmapped_source_and_mapped_target(pool: MemoryPool) -> None:
    a, b = pool.create_slot(), pool.create_slot()
    pool.map(a, 0, CHUNK)
    pool.map(b, 0, CHUNK)
    with pytest.raises(PoolError, match="not fully mapped"):
        pool.share(a, 0, b, CHUNK, 2 * CHUNK)
    with pytest.raises(PoolError, match="already partly mapped"):
        pool.share(a, 0, b, 0, CHUNK)
    assert pool.used_bytes == 2 * CHUNK


def test_release_returns_all_chunks_and_kills_the_handle(pool: MemoryPool) -> None:
    slot = pool.create_slot()
    pool.map(slot, 0, 3 * CHUNK)
    pool.release_slot(slot)
    assert pool.used_bytes == 0
    assert pool.usage().slot_chunks == {}
    with pytest.raises(PoolError, match="not a live slot"):
        pool.map(slot, 0, CHUNK)
    with pytest.raises(PoolError, match="not a live slot"):
        pool.release_slot(slot)


def test_closed_pool_refuses_work(pool: MemoryPool) -> None:
    pool.map(pool.create_slot(), 0, CHUNK)
    pool.close()
    pool.close()  # idempotent
    with pytest.raises(PoolError, match="closed"):
        pool.create_slot()


def test_a_slot_of_another_pool_is_refused(pool: MemoryPool) -> None:
    with FakePool(8 * CHUNK, CHUNK) as other, pytest.raises(PoolError, match="not a live slot"):
        pool.map(other.create_slot(), 0, CHUNK)


@pytest.mark.parametrize(
    ("offset", "nbytes", "field"),
    [(-1, CHUNK, "offset"), (0, -5, "nbytes"), (0, 9 * CHUNK, "nbytes"), (7 * CHUNK, 2 * CHUNK, "nbytes")],
)
def test_bad_ranges_name_the_field(pool: MemoryPool, offset: int, nbytes: int, field: str) -> None:
    slot = pool.create_slot()
    with pytest.raises(InvalidFieldError) as info:
        pool.map(slot, offset, nbytes)
    assert info.value.field == field
    assert pool.used_bytes == 0


@pytest.mark.parametrize(("offset", "nbytes", "field"), [(1, CHUNK, "offset"), (0, CHUNK + 1, "nbytes")])
def test_unmap_requires_chunk_alignment(pool: MemoryPool, offset: int, nbytes: int, field: str) -> None:
    slot = pool.create_slot()
    pool.map(slot, 0, 3 * CHUNK)
    with pytest.raises(InvalidFieldError) as info:
        pool.unmap(slot, offset, nbytes)
    assert info.value.field == field
    assert slot.mapped_chunks == 3


@pytest.mark.parametrize(
    ("backend", "capacity", "chunk", "field"),
    [
        ("gpu", 8 * CHUNK, CHUNK, "backend"),
        ("fake", 8 * CHUNK + 1, CHUNK, "capacity_bytes"),
        ("fake", 0, CHUNK, "capacity_bytes"),
        ("fake", 8 * CHUNK, 0, "chunk_bytes"),
        ("host", 8 * CHUNK, CHUNK + 1, "chunk_bytes"),  # not a multiple of the page size
        ("host", 8 * CHUNK, True, "chunk_bytes"),
    ],
)
def test_bad_pool_parameters_name_the_field(backend: str, capacity: int, chunk: int, field: str) -> None:
    with pytest.raises(InvalidFieldError) as info:
        create_pool(backend, capacity, chunk)
    assert info.value.field == field


def test_fake_pool_has_no_bytes() -> None:
    with FakePool(4 * CHUNK, CHUNK) as pool:
        slot = pool.create_slot()
        pool.map(slot, 0, CHUNK)
        with pytest.raises(NoBytesError, match="no bytes"):
            slot.view(0, 16)


_ops = st.lists(
    st.tuples(st.sampled_from(["map", "unmap"]), st.integers(0, 2), st.integers(0, 7), st.integers(1, 4)),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_accounting_matches_a_model_under_any_sequence(ops: list[tuple[str, int, int, int]]) -> None:
    """Whatever is mapped or refused, free + used = capacity and no chunk backs two places unshared."""
    with FakePool(8 * CHUNK, CHUNK) as pool:
        slots = [pool.create_slot() for _ in range(3)]
        model: list[set[int]] = [set(), set(), set()]
        for op, s, first, count in ops:
            stop = min(first + count, 8)
            wanted = set(range(first, stop))
            if op == "map":
                missing = wanted - model[s]
                in_use = sum(len(m) for m in model)
                if len(missing) > 8 - in_use:
                    with pytest.raises(PoolExhaustedError):
                        pool.map(slots[s], first * CHUNK, (stop - first) * CHUNK)
                else:
                    assert pool.map(slots[s], first * CHUNK, (stop - first) * CHUNK) == len(missing)
                    model[s] |= wanted
            else:
                assert pool.unmap(slots[s], first * CHUNK, (stop - first) * CHUNK) == len(wanted & model[s])
                model[s] -= wanted
            chunks = [c for slot in slots for c in slot.physical_chunks().values()]
            assert len(chunks) == len(set(chunks)) == sum(len(m) for m in model)
            assert pool.used_bytes + pool.free_bytes == pool.capacity_bytes
            assert pool.used_bytes == len(chunks) * CHUNK
            assert [set(slot.physical_chunks()) for slot in slots] == model


class _FailingPool(FakePool):
    """The fake backend with a mapping primitive that fails on its ``fail_at``-th call (an OS refusal)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(8 * CHUNK, CHUNK)
        self.calls = 0
        self.unmapped: list[int] = []
        self.fail_at = fail_at

    def _map_chunk(self, address: int, chunk: int) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError(12, "Cannot allocate memory")

    def _unmap_chunk(self, address: int) -> None:
        self.unmapped.append(address)


def test_a_backend_failure_mid_map_is_rolled_back() -> None:
    with _FailingPool(fail_at=3) as pool:
        slot = pool.create_slot()
        with pytest.raises(PoolError, match="Cannot allocate memory"):
            pool.map(slot, 0, 4 * CHUNK)
        assert pool.unmapped == [0, CHUNK]  # the two chunks mapped before the failure are taken back
        assert (slot.mapped_chunks, pool.used_bytes, pool.free_chunks) == (0, 0, 8)
        assert pool.map(slot, 0, 4 * CHUNK) == 4  # the pool is intact and works again
        assert dict(slot.physical_chunks()) == {0: 0, 1: 1, 2: 2, 3: 3}
