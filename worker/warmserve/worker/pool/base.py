"""The memory pool of one GPU: physical chunks mapped into virtual slots without copying data
(docs/memory-pool.md).

A pool owns ``capacity_bytes`` of physical memory cut into chunks of ``chunk_bytes``. A :class:`Slot` is a
virtual address range as large as the pool; a replica shard lives in one slot (weights at offset 0, its
KV cache right after). Mapping a byte range of a slot backs it with free chunks; unmapping returns them.
Nothing is ever copied: promotion, demotion and eviction are page-table edits.

This module holds the bookkeeping every backend shares (free list, per-slot chunk table, live views) and
the decisions it makes (all-or-nothing maps, refusing to pull memory from under a live tensor). A backend
(``host``, ``cuda``, ``fake``) only supplies the five primitives at the bottom of :class:`MemoryPool`.

Failure behaviour, decided here once for all backends:

- a map that needs more free chunks than there are raises :class:`PoolExhaustedError` and changes
  nothing (no chunk taken, nothing mapped), so a refused prewarm never touches a serving replica;
- a backend failure in the middle of a map undoes the chunks it had mapped and raises :class:`PoolError`;
- unmapping or releasing memory that a live tensor view still covers raises :class:`SlotBusyError`
  instead of leaving a tensor that would crash the process when read (drop the views first);
- a view of a range that is not fully mapped raises :class:`UnmappedRangeError` for the same reason.
"""

from __future__ import annotations

import heapq
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Self

from warmserve.protocol.errors import InvalidFieldError, InvalidInputError, UnavailableError, WarmServeError

if TYPE_CHECKING:  # imported by the functions that make tensors: a fake-GPU worker runs without torch
    import torch

DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024


class PoolError(WarmServeError):
    """The pool cannot do what was asked; the message says why. The pool is left unchanged. One of two
    kinds: :class:`PoolUnavailableError` (not now) or :class:`PoolRequestError` (never)."""


class PoolUnavailableError(PoolError, UnavailableError):
    """Temporary: memory is short, a view is still alive, or a backend call failed (a kernel or driver
    resource limit); the same request may succeed later."""


class PoolRequestError(PoolError, InvalidInputError):
    """Permanent: the pool never allows this (a closed pool, a slot of another pool, a range mapped
    twice, a backend this machine lacks)."""


class PoolExhaustedError(PoolUnavailableError):
    """Not enough free chunks for a map: the request is refused whole, nothing was taken."""

    def __init__(self, needed_chunks: int, free_chunks: int, chunk_bytes: int) -> None:
        self.needed_chunks = needed_chunks
        self.free_chunks = free_chunks
        super().__init__(
            f"memory pool exhausted: needs {needed_chunks} more chunks of {chunk_bytes} bytes, "
            f"{free_chunks} free"
        )


class SlotBusyError(PoolUnavailableError):
    """Memory to be unmapped or released is still covered by a live tensor view."""


class UnmappedRangeError(PoolRequestError):
    """A view was asked for bytes of a slot that are not (all) backed by chunks."""


class NoBytesError(PoolRequestError):
    """The backend keeps accounting only (``fake``): it has no bytes to view."""


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """A snapshot of the pool's accounting: what the worker reports per GPU."""

    capacity_bytes: int
    chunk_bytes: int
    used_bytes: int
    slot_chunks: Mapping[int, int]  # slot id -> chunks mapped into it (a shared chunk counts in each slot)

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - self.used_bytes


@dataclass(frozen=True, slots=True)
class _LiveView:
    start: int
    end: int
    owner: weakref.ref[object]


class Slot:
    """One virtual address range of a pool, as large as the pool. Created by :meth:`MemoryPool.create_slot`.

    The slot is a handle: mapping and unmapping go through its pool, which keeps it consistent.
    """

    def __init__(self, pool: MemoryPool, slot_id: int, address: int) -> None:
        self.pool = pool
        self.id = slot_id
        self.address = address
        self.size_bytes = pool.capacity_bytes
        self._chunks: dict[int, int] = {}  # chunk index within the slot -> physical chunk
        self._views: list[_LiveView] = []
        self.released = False

    @property
    def mapped_chunks(self) -> int:
        return len(self._chunks)

    @property
    def mapped_bytes(self) -> int:
        return len(self._chunks) * self.pool.chunk_bytes

    def physical_chunks(self) -> Mapping[int, int]:
        """Which physical chunk backs each mapped chunk index of this slot (a read-only copy)."""
        with self.pool._lock:
            return MappingProxyType(dict(self._chunks))

    def is_mapped(self, offset: int, nbytes: int) -> bool:
        """True if every byte of ``[offset, offset + nbytes)`` is backed by a chunk."""
        first, stop = self.pool._chunk_span(self, offset, nbytes)
        return all(i in self._chunks for i in range(first, stop))

    def view(self, offset: int, nbytes: int) -> torch.Tensor:
        """A uint8 tensor over ``nbytes`` of this slot at ``offset``: no copy, writes land in the chunks.

        Raises :class:`UnmappedRangeError` if part of the range is not mapped, :class:`NoBytesError` on
        the ``fake`` backend. While the tensor (or any view of it) lives, the range cannot be unmapped.
        """
        return self.pool._view(self, offset, nbytes)

    def live_views(self) -> int:
        """How many views handed out by :meth:`view` are still referenced (by any tensor)."""
        with self.pool._lock:  # a load thread may be adding a view right now
            self._views = [v for v in self._views if v.owner() is not None]
            return len(self._views)

    def _busy(self, start: int, end: int) -> bool:
        return any(v.start < end and start < v.end for v in self._views if v.owner() is not None)

    def __repr__(self) -> str:
        return f"Slot(id={self.id}, mapped_chunks={self.mapped_chunks}, released={self.released})"


class MemoryPool(ABC):
    """Physical chunks and virtual slots of one device; see the module docstring for failure behaviour.

    Thread-safe: a lock serialises every change of the mapping (loads write through views concurrently).
    """

    backend: str = ""

    def __init__(self, capacity_bytes: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        granularity = self.granularity()
        if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes <= 0:
            raise InvalidFieldError("chunk_bytes", "a positive integer", chunk_bytes)
        if chunk_bytes % granularity:
            raise InvalidFieldError("chunk_bytes", f"a multiple of {granularity} bytes", chunk_bytes)
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes <= 0:
            raise InvalidFieldError("capacity_bytes", "a positive integer", capacity_bytes)
        if capacity_bytes % chunk_bytes:
            raise InvalidFieldError(
                "capacity_bytes", f"a multiple of chunk_bytes ({chunk_bytes})", capacity_bytes
            )
        self.capacity_bytes = capacity_bytes
        self.chunk_bytes = chunk_bytes
        self.num_chunks = capacity_bytes // chunk_bytes
        self._free = list(range(self.num_chunks))  # a min-heap: the lowest free chunk is reused first
        self._refs = [0] * self.num_chunks  # how many slot positions map each chunk
        self._slots: dict[int, Slot] = {}
        self._next_slot = 0
        self._lock = threading.RLock()
        self._closed = False

    # --- accounting ------------------------------------------------------------------------------

    @property
    def free_chunks(self) -> int:
        return len(self._free)

    @property
    def used_bytes(self) -> int:
        return (self.num_chunks - len(self._free)) * self.chunk_bytes

    @property
    def free_bytes(self) -> int:
        return len(self._free) * self.chunk_bytes

    def usage(self) -> PoolUsage:
        with self._lock:
            return PoolUsage(
                capacity_bytes=self.capacity_bytes,
                chunk_bytes=self.chunk_bytes,
                used_bytes=self.used_bytes,
                slot_chunks=MappingProxyType({sid: s.mapped_chunks for sid, s in self._slots.items()}),
            )

    # --- slots -----------------------------------------------------------------------------------

    def create_slot(self) -> Slot:
        """Reserve a new virtual range as large as the pool, with nothing mapped (costs no memory)."""
        with self._lock:
            self._check_open()
            slot = Slot(self, self._next_slot, self._reserve(self.capacity_bytes))
            self._slots[slot.id] = slot
            self._next_slot += 1
            return slot

    def release_slot(self, slot: Slot) -> None:
        """Unmap everything in the slot (its chunks go back to the pool) and give up its range.

        Raises :class:`SlotBusyError` (and releases nothing) if a view of the slot is still alive.
        """
        with self._lock:
            self._check_slot(slot)
            if slot.live_views():
                raise SlotBusyError(
                    f"slot {slot.id} has {slot.live_views()} live tensor views; drop them first"
                )
            self._detach(slot, sorted(slot._chunks))
            self._release(slot.address, slot.size_bytes)
            slot.released = True
            del self._slots[slot.id]

    # --- mapping ---------------------------------------------------------------------------------

    def map(self, slot: Slot, offset: int, nbytes: int) -> int:
        """Back ``[offset, offset + nbytes)`` of ``slot`` with free chunks; return how many were newly mapped.

        The range is widened to whole chunks; chunks already mapped there stay as they are (and keep
        their bytes). All or nothing: :class:`PoolExhaustedError` if the free chunks do not suffice.
        """
        with self._lock:
            self._check_slot(slot)
            first, stop = self._chunk_span(slot, offset, nbytes)
            missing = [i for i in range(first, stop) if i not in slot._chunks]
            if len(missing) > len(self._free):
                raise PoolExhaustedError(len(missing), len(self._free), self.chunk_bytes)
            taken = [heapq.heappop(self._free) for _ in missing]
            try:
                self._attach(slot, dict(zip(missing, taken, strict=True)))
            finally:
                for chunk in taken:
                    if self._refs[chunk] == 0:
                        heapq.heappush(self._free, chunk)
            return len(missing)

    def share(self, source: Slot, source_offset: int, target: Slot, target_offset: int, nbytes: int) -> int:
        """Map the chunks behind a range of ``source`` into ``target`` too: both then see the same bytes.

        Offsets and ``nbytes`` must be chunk-aligned; the source range must be fully mapped and the
        target range fully unmapped. Takes no free chunk; a chunk returns to the pool only when every
        slot position mapping it is unmapped. Returns the number of chunks mapped into ``target``.
        """
        with self._lock:
            self._check_slot(source)
            self._check_slot(target)
            src_first, src_stop = self._chunk_span(source, source_offset, nbytes, aligned=True)
            dst_first, _ = self._chunk_span(target, target_offset, nbytes, aligned=True)
            if not source.is_mapped(source_offset, nbytes):
                raise UnmappedRangeError(
                    f"slot {source.id}: [{source_offset}, +{nbytes}) is not fully mapped"
                )
            placement = {dst_first + k: source._chunks[i] for k, i in enumerate(range(src_first, src_stop))}
            if any(i in target._chunks for i in placement):
                raise PoolRequestError(
                    f"slot {target.id}: [{target_offset}, +{nbytes}) is already partly mapped"
                )
            self._attach(target, placement)
            return len(placement)

    def unmap(self, slot: Slot, offset: int, nbytes: int) -> int:
        """Unmap the chunks of ``[offset, offset + nbytes)`` (chunk-aligned); return how many were mapped.

        Alignment is required, not rounded, because widening an unmap would drop bytes the caller still
        needs. Chunks nobody else maps return to the pool with their bytes (reused by the next map).
        Raises :class:`SlotBusyError` and unmaps nothing if a live view overlaps the range.
        """
        with self._lock:
            self._check_slot(slot)
            first, stop = self._chunk_span(slot, offset, nbytes, aligned=True)
            if slot._busy(offset, offset + nbytes):
                raise SlotBusyError(f"slot {slot.id}: a live tensor view covers [{offset}, +{nbytes})")
            indices = [i for i in range(first, stop) if i in slot._chunks]
            self._detach(slot, indices)
            return len(indices)

    def close(self) -> None:
        """Release every slot and the physical memory; refuses (:class:`SlotBusyError`) while views live."""
        with self._lock:
            if self._closed:
                return
            for slot in list(self._slots.values()):
                self.release_slot(slot)
            self._close()
            self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- shared internals --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PoolRequestError(f"the {self.backend} pool is closed")

    def _check_slot(self, slot: Slot) -> None:
        self._check_open()
        if slot.pool is not self or slot.released or self._slots.get(slot.id) is not slot:
            raise PoolRequestError(f"slot {slot.id} is not a live slot of this pool")

    def _chunk_span(self, slot: Slot, offset: int, nbytes: int, *, aligned: bool = False) -> tuple[int, int]:
        """Chunk indices ``[first, stop)`` covering the byte range; validates it against the slot."""
        for name, value in (("offset", offset), ("nbytes", nbytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidFieldError(name, "a non-negative integer", value)
        if offset + nbytes > slot.size_bytes:
            raise InvalidFieldError(
                "nbytes", f"a range ending within the slot ({slot.size_bytes} bytes)", nbytes
            )
        if aligned and (offset % self.chunk_bytes or nbytes % self.chunk_bytes):
            raise InvalidFieldError(
                "offset" if offset % self.chunk_bytes else "nbytes",
                f"a multiple of the chunk size ({self.chunk_bytes})",
                offset if offset % self.chunk_bytes else nbytes,
            )
        return offset // self.chunk_bytes, -(-(offset + nbytes) // self.chunk_bytes)

    def _attach(self, slot: Slot, placement: Mapping[int, int]) -> None:
        """Map each ``slot index -> chunk``; on a backend failure undo what was done and raise PoolError."""
        done: list[int] = []
        try:
            for index, chunk in placement.items():
                self._map_chunk(slot.address + index * self.chunk_bytes, chunk)
                done.append(index)
        except OSError as exc:
            for index in done:
                self._unmap_chunk(slot.address + index * self.chunk_bytes)
            raise PoolUnavailableError(
                f"{self.backend} pool: mapping a chunk into slot {slot.id} failed: {exc}"
            ) from exc
        for index, chunk in placement.items():
            slot._chunks[index] = chunk
            self._refs[chunk] += 1

    def _detach(self, slot: Slot, indices: list[int]) -> None:
        for index in indices:
            self._unmap_chunk(slot.address + index * self.chunk_bytes)
            chunk = slot._chunks.pop(index)
            self._refs[chunk] -= 1
            if self._refs[chunk] == 0:
                heapq.heappush(self._free, chunk)

    def _view(self, slot: Slot, offset: int, nbytes: int) -> torch.Tensor:
        with self._lock:
            self._check_slot(slot)
            if not slot.is_mapped(offset, nbytes):
                raise UnmappedRangeError(f"slot {slot.id}: [{offset}, +{nbytes}) is not fully mapped")
            if nbytes == 0:
                import torch  # here only: the fake backend, which has no bytes, never needs it

                return torch.empty(0, dtype=torch.uint8)
            tensor, owner = self._tensor(slot.address + offset, nbytes)
            slot.live_views()  # prunes dead entries so the list stays short
            slot._views.append(_LiveView(offset, offset + nbytes, weakref.ref(owner)))
            return tensor

    # --- the backend's primitives ------------------------------------------------------------------

    @abstractmethod
    def granularity(self) -> int:
        """The unit chunk sizes must be a multiple of (the page size, the CUDA allocation granularity)."""

    @abstractmethod
    def _reserve(self, size: int) -> int:
        """Reserve ``size`` bytes of address space with nothing behind it; return its address."""

    @abstractmethod
    def _release(self, address: int, size: int) -> None:
        """Give back a reserved range (already fully unmapped)."""

    @abstractmethod
    def _map_chunk(self, address: int, chunk: int) -> None:
        """Put physical ``chunk`` at ``address`` (chunk-aligned, in a reserved range); OSError on failure."""

    @abstractmethod
    def _unmap_chunk(self, address: int) -> None:
        """Take the chunk at ``address`` away, leaving the range reserved (never a hole)."""

    @abstractmethod
    def _tensor(self, address: int, nbytes: int) -> tuple[torch.Tensor, object]:
        """A zero-copy uint8 tensor over mapped memory, and the object whose lifetime marks the view alive."""

    @abstractmethod
    def _close(self) -> None:
        """Free the physical memory (all slots are already released)."""
