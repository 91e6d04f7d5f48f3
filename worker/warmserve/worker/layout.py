"""Where each weight tensor sits inside a slot: the contract between the model store and the engines.

The store copies a checkpoint's tensors into a slot at the offsets a :class:`WeightLayout` gives; an
engine then builds its model with parameters that are *views* of those bytes (zero copy). Offsets are
aligned (64 bytes by default) so that any dtype view of the uint8 slot is legal; the KV cache of a
serving replica starts at ``total_bytes`` rounded up to the pool's chunk size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

DEFAULT_ALIGNMENT = 64


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One tensor: its checkpoint name, safetensors dtype (``F16``, ``BF16``, ``F32``...), shape and place."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class WeightLayout:
    """All tensors of one replica shard, in slot order; ``total_bytes`` includes alignment padding."""

    entries: Mapping[str, TensorEntry]
    total_bytes: int
    alignment: int = DEFAULT_ALIGNMENT

    def __iter__(self) -> Iterator[TensorEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)


def align_up(value: int, alignment: int) -> int:
    """Round ``value`` up to a multiple of ``alignment`` (a positive integer)."""
    return -(-value // alignment) * alignment
