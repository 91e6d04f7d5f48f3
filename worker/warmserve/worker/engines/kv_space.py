"""Byte ranges of an instance's KV region, handed out per sequence (first fit, aligned).

Each admitted sequence reserves ``(prompt + max_tokens) × kv_bytes_per_token`` bytes up front, so a
sequence once admitted can never run out of KV space mid-stream; a sequence that does not fit waits.
Both the torch engine (which puts real key/value tensors in the range) and the fake engine (accounting
only) use it, so their admission decisions are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from warmserve.worker.layout import DEFAULT_ALIGNMENT, align_up


@dataclass(frozen=True, slots=True)
class KvRange:
    """``nbytes`` bytes at ``offset`` inside the KV region."""

    offset: int
    nbytes: int


class KvSpace:
    """First-fit allocator over ``capacity`` bytes; every range starts on an ``alignment`` boundary."""

    def __init__(self, capacity: int, alignment: int = DEFAULT_ALIGNMENT) -> None:
        self.capacity = capacity
        self.alignment = alignment
        self._ranges: dict[int, KvRange] = {}

    @property
    def used_bytes(self) -> int:
        """Bytes reserved by live ranges (alignment padding excluded)."""
        return sum(r.nbytes for r in self._ranges.values())

    @property
    def high_water(self) -> int:
        """The end of the highest live range: the capacity cannot shrink below it."""
        return max((r.offset + r.nbytes for r in self._ranges.values()), default=0)

    def resize(self, capacity: int) -> bool:
        """Grow or shrink the space at its top; False, changing nothing, if a live range ends above it."""
        if capacity < self.high_water:
            return False
        self.capacity = capacity
        return True

    def allocate(self, nbytes: int) -> KvRange | None:
        """Reserve ``nbytes`` (>= 1) at the lowest aligned offset where they fit; ``None`` if none does."""
        cursor = 0
        for used in sorted(self._ranges.values(), key=lambda r: r.offset):
            if used.offset - cursor >= nbytes:
                break
            cursor = align_up(used.offset + used.nbytes, self.alignment)
        if cursor + nbytes > self.capacity:
            return None
        taken = KvRange(cursor, nbytes)
        self._ranges[cursor] = taken
        return taken

    def free(self, taken: KvRange) -> None:
        """Give a range back; freeing a range twice is a no-op (cancellation and completion may race)."""
        if self._ranges.get(taken.offset) == taken:
            del self._ranges[taken.offset]
