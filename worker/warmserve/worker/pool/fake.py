"""Fake backend: the pool's accounting without any memory, for fake-GPU mode (kind e2e, local, simulator).

Every decision (exhaustion, all-or-nothing maps, shared chunks, busy checks) is the base class's, so a
fake worker refuses exactly the prewarms a real one would. There are no bytes: :meth:`Slot.view` raises
:class:`~warmserve.worker.pool.base.NoBytesError`, which a fake engine never calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from warmserve.worker.pool.base import MemoryPool, NoBytesError

if TYPE_CHECKING:  # annotations only: a fake-GPU worker runs without torch
    import torch


class FakePool(MemoryPool):
    """Accounting only: capacity and chunks as configured, no address space, no memory."""

    backend = "fake"

    def granularity(self) -> int:
        return 1

    def _reserve(self, size: int) -> int:
        return 0

    def _release(self, address: int, size: int) -> None:
        pass

    def _map_chunk(self, address: int, chunk: int) -> None:
        pass

    def _unmap_chunk(self, address: int) -> None:
        pass

    def _tensor(self, address: int, nbytes: int) -> tuple[torch.Tensor, object]:
        raise NoBytesError("the fake pool keeps accounting only and has no bytes to view (fake-GPU mode)")

    def _close(self) -> None:
        pass
