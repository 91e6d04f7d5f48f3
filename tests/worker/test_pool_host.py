"""The host backend remaps real memory: bytes, reuse, safety of live views, and no leaks over many cycles."""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from warmserve.worker.pool import PoolError, SlotBusyError, UnmappedRangeError
from warmserve.worker.pool.host import HostPool

CHUNK = 2 * 1024 * 1024


@pytest.fixture
def pool() -> Iterator[HostPool]:
    with HostPool(8 * CHUNK, CHUNK) as p:
        yield p


def _maps_entry(address: int) -> str:
    """The /proc/self/maps line of the mapping that contains ``address``."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start <= address < end:
                return line
    raise AssertionError(f"{address:#x} is not mapped at all")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _map_lines() -> int:
    with open("/proc/self/maps") as maps:
        return sum(1 for _ in maps)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_bytes_written_through_a_slot_are_the_chunks_bytes(pool: HostPool) -> None:
    slot = pool.create_slot()
    pool.map(slot, 3 * CHUNK, 2 * CHUNK)
    view = slot.view(3 * CHUNK + 10, CHUNK)  # straddles the two chunks
    view.copy_(torch.arange(CHUNK, dtype=torch.int64).to(torch.uint8))
    first, second = slot.physical_chunks()[3], slot.physical_chunks()[4]
    head = os.pread(pool.fd, 16, pool.chunk_file_offset(first) + 10)
    tail = os.pread(pool.fd, 10, pool.chunk_file_offset(second))
    assert head == bytes(range(16))
    assert tail == bytes((CHUNK - 10 + i) % 256 for i in range(10))


def test_one_chunk_in_two_slots_shows_the_same_bytes(pool: HostPool) -> None:
    a, b = pool.create_slot(), pool.create_slot()
    pool.map(a, 0, CHUNK)
    pool.share(a, 0, b, 5 * CHUNK, CHUNK)
    writer, reader = a.view(0, CHUNK), b.view(5 * CHUNK, CHUNK)
    writer[100:104] = torch.tensor([1, 2, 3, 4], dtype=torch.uint8)
    assert reader[100:104].tolist() == [1, 2, 3, 4]
    assert a.address != b.address
    assert writer.data_ptr() != reader.data_ptr()  # two addresses, one physical chunk: no copy anywhere


def test_unmap_keeps_the_range_reserved_and_the_chunk_keeps_its_bytes(pool: HostPool) -> None:
    a, b = pool.create_slot(), pool.create_slot()
    pool.map(a, 0, CHUNK)
    view = a.view(0, 8)
    view.fill_(42)
    del view
    pool.unmap(a, 0, CHUNK)
    assert _maps_entry(a.address).split()[1] == "---p"  # PROT_NONE placeholder, never a hole
    with pytest.raises(UnmappedRangeError):
        a.view(0, 8)
    pool.map(b, 2 * CHUNK, CHUNK)
    assert b.physical_chunks() == {2: 0}  # the freed chunk is reused, with its bytes (no zeroing)
    assert b.view(2 * CHUNK, 8).tolist() == [42] * 8
    assert _maps_entry(b.address + 2 * CHUNK).split()[1] == "rw-s"


def test_typed_views_share_the_slot_bytes(pool: HostPool) -> None:
    slot = pool.create_slot()
    pool.map(slot, 0, CHUNK)
    weights = slot.view(64, 4 * 6).view(torch.float32).view(2, 3)
    weights.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    assert slot.view(64, 4 * 6).view(torch.float32).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_live_views_block_unmap_and_release_until_dropped(pool: HostPool) -> None:
    slot = pool.create_slot()
    pool.map(slot, 0, 2 * CHUNK)
    kv = slot.view(CHUNK, CHUNK)[10:20]  # a view of a view keeps the memory busy too
    with pytest.raises(SlotBusyError):
        pool.unmap(slot, CHUNK, CHUNK)
    with pytest.raises(SlotBusyError):
        pool.release_slot(slot)
    with pytest.raises(SlotBusyError):
        pool.close()
    assert pool.unmap(slot, 0, CHUNK) == 1  # the other chunk is not covered by the view
    assert slot.mapped_chunks == 1
    del kv
    gc.collect()
    assert slot.live_views() == 0
    assert pool.unmap(slot, CHUNK, CHUNK) == 1
    pool.release_slot(slot)
    assert pool.used_bytes == 0


def test_ten_thousand_map_unmap_cycles_leak_nothing(pool: HostPool) -> None:
    slots = [pool.create_slot() for _ in range(2)]

    def cycles(count: int) -> None:
        for i in range(count):
            slot = slots[i % 2]
            offset = (i % 7) * CHUNK
            pool.map(slot, offset, 2 * CHUNK)
            if i % 100 == 0:
                view = slot.view(offset, 4096)
                view[i % 4096] = i % 251
                assert view[i % 4096].item() == i % 251
                del view
            pool.unmap(slot, offset, 2 * CHUNK)

    cycles(200)  # let the interpreter reach its steady state first
    gc.collect()
    fds, lines, rss = _open_fds(), _map_lines(), _rss_bytes()
    cycles(10_000)
    gc.collect()
    assert pool.used_bytes == 0
    assert _open_fds() == fds
    assert _map_lines() == lines
    assert _rss_bytes() - rss < 4 * 1024 * 1024


def test_closing_pools_gives_back_the_fd_and_the_mappings() -> None:
    fds, lines = _open_fds(), _map_lines()
    for _ in range(20):
        with HostPool(4 * CHUNK, CHUNK) as pool:
            slot = pool.create_slot()
            pool.map(slot, 0, 4 * CHUNK)
    assert (_open_fds(), _map_lines()) == (fds, lines)


_steps = st.lists(
    st.tuples(
        st.sampled_from(["map", "unmap", "share"]), st.integers(0, 2), st.integers(0, 5), st.integers(1, 3)
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(_steps)
def test_every_mapped_slot_chunk_shows_its_physical_chunk(steps: list[tuple[str, int, int, int]]) -> None:
    """After any sequence of maps, unmaps and shares, each slot position reads and writes its own chunk."""
    chunk = mmap.PAGESIZE
    with HostPool(6 * chunk, chunk) as pool:
        slots = [pool.create_slot() for _ in range(3)]
        for op, s, first, count in steps:
            offset, nbytes = first * chunk, min(count, 6 - first) * chunk
            with contextlib.suppress(PoolError):  # exhaustion and refused shares leave the pool as it was
                if op == "map":
                    pool.map(slots[s], offset, nbytes)
                elif op == "unmap":
                    pool.unmap(slots[s], offset, nbytes)
                else:
                    pool.share(slots[s], offset, slots[(s + 1) % 3], offset, nbytes)
            for slot in slots:
                for index, physical in slot.physical_chunks().items():
                    marker = bytes([slot.id + 1, index + 1, physical + 1])
                    view = slot.view(index * chunk, 3)
                    view.copy_(torch.frombuffer(bytearray(marker), dtype=torch.uint8))
                    del view
                    assert os.pread(pool.fd, 3, pool.chunk_file_offset(physical)) == marker
