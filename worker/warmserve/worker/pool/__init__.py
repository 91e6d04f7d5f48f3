"""The worker's memory pool: one interface (:class:`MemoryPool`, :class:`Slot`), three backends.

``create_pool("host" | "cuda" | "fake", capacity_bytes, chunk_bytes)`` picks one by name; ``cuda`` is
never chosen implicitly (it needs cuda-python and a GPU, see :mod:`.cuda`). See ``docs/memory-pool.md``.
"""

from __future__ import annotations

from warmserve.protocol.errors import InvalidFieldError
from warmserve.worker.pool.base import (
    DEFAULT_CHUNK_BYTES,
    MemoryPool,
    NoBytesError,
    PoolError,
    PoolExhaustedError,
    PoolRequestError,
    PoolUnavailableError,
    PoolUsage,
    Slot,
    SlotBusyError,
    UnmappedRangeError,
)

BACKENDS = ("host", "cuda", "fake")  # the names create_pool accepts (for CLI choices and config checks)

__all__ = [
    "BACKENDS",
    "DEFAULT_CHUNK_BYTES",
    "MemoryPool",
    "NoBytesError",
    "PoolError",
    "PoolExhaustedError",
    "PoolRequestError",
    "PoolUnavailableError",
    "PoolUsage",
    "Slot",
    "SlotBusyError",
    "UnmappedRangeError",
    "create_pool",
]


def create_pool(
    backend: str, capacity_bytes: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES, *, device: int = 0
) -> MemoryPool:
    """Create a pool of ``capacity_bytes`` with the named backend; ``device`` is the GPU index for ``cuda``.

    An unknown backend or a bad size raises :class:`InvalidFieldError` naming the field.
    """
    if backend == "host":
        from warmserve.worker.pool.host import HostPool

        return HostPool(capacity_bytes, chunk_bytes)
    if backend == "cuda":
        from warmserve.worker.pool.cuda import CudaPool

        return CudaPool(capacity_bytes, chunk_bytes, device=device)
    if backend == "fake":
        from warmserve.worker.pool.fake import FakePool

        return FakePool(capacity_bytes, chunk_bytes)
    raise InvalidFieldError("backend", f"one of {list(BACKENDS)}", backend)
