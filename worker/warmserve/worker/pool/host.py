"""Host-memory backend: memfd chunks mapped into reserved address ranges — real zero-copy remapping on a CPU.

Physical memory is **one** memfd of ``capacity_bytes``; chunk ``c`` is the file range
``[c * chunk_bytes, (c + 1) * chunk_bytes)``. One file rather than one per chunk keeps the pool at a single
file descriptor whatever its size (thousands of chunks would otherwise press on the fd limit) and makes a
chunk a plain offset. The whole file is committed with ``posix_fallocate`` when the pool is created, as a
GPU pool's memory is: a machine without that much memory fails then, with a clear error, instead of with a
SIGBUS at some later first touch.

A slot reserves its range with an anonymous ``PROT_NONE`` mapping. Mapping a chunk puts the memfd range
in place with ``mmap(MAP_FIXED | MAP_SHARED)``; unmapping puts an anonymous ``PROT_NONE`` mapping back
with ``MAP_FIXED`` — the range is never left as a hole another allocation could take. Page tables are
filled on first touch, not at map time: ``MAP_POPULATE`` costs the same per page (≈0.6 s per GiB here)
but would spend it in the caller's thread under the pool lock, while first touches happen in the load's
reader threads, in parallel (bench/bench_load.py, docs/memory-pool.md). Python's :mod:`mmap` cannot
place a mapping, so libc's ``mmap``/``munmap`` are called through ctypes.

Releasing a slot or unmapping a chunk while a tensor view still covers it is refused by the base class
(:class:`~warmserve.worker.pool.base.SlotBusyError`): reading such a view would kill the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import weakref

import torch

from warmserve.worker.pool.base import DEFAULT_CHUNK_BYTES, MemoryPool, PoolUnavailableError

# Linux values, the same on x86-64 and arm64; the mmap module does not export them.
PROT_NONE = 0
MAP_FIXED = 0x10
MAP_NORESERVE = 0x4000

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)  # a private handle: our argtypes only
_mmap = _libc.mmap
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_mmap.restype = ctypes.c_void_p
_munmap = _libc.munmap
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_munmap.restype = ctypes.c_int
_MAP_FAILED = ctypes.c_void_p(-1).value
# A writable memoryview over raw memory; unlike a ctypes array it creates no new type per distinct size.
_memory_view = ctypes.pythonapi.PyMemoryView_FromMemory
_memory_view.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
_memory_view.restype = ctypes.py_object
_PYBUF_WRITE = 0x200

_RESERVED = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE


def _call_mmap(address: int | None, size: int, prot: int, flags: int, fd: int, offset: int) -> int:
    """libc mmap; raises OSError with errno on failure, returns the address."""
    result = _mmap(address, size, prot, flags, fd, offset)
    if result is None or result == _MAP_FAILED:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mmap: {os.strerror(errno)}")
    return int(result)


class HostPool(MemoryPool):
    """A pool in host memory; ``fd`` is the memfd, chunk ``c`` lives at file offset ``c * chunk_bytes``."""

    backend = "host"

    def __init__(self, capacity_bytes: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        super().__init__(capacity_bytes, chunk_bytes)
        self.fd = os.memfd_create("warmserve-pool", os.MFD_CLOEXEC)
        self._close_fd = weakref.finalize(self, os.close, self.fd)  # closes it even if close() is forgotten
        try:
            os.ftruncate(self.fd, capacity_bytes)
            os.posix_fallocate(self.fd, 0, capacity_bytes)
        except OSError as exc:
            self._close_fd()
            raise PoolUnavailableError(
                f"host pool: cannot commit {capacity_bytes} bytes of memory: {exc}"
            ) from exc

    def granularity(self) -> int:
        return mmap.PAGESIZE

    def chunk_file_offset(self, chunk: int) -> int:
        """Where physical ``chunk`` sits in :attr:`fd` (to read a chunk's bytes without any slot)."""
        return chunk * self.chunk_bytes

    def _reserve(self, size: int) -> int:
        try:
            return _call_mmap(None, size, PROT_NONE, _RESERVED, -1, 0)
        except OSError as exc:
            raise PoolUnavailableError(
                f"host pool: cannot reserve {size} bytes of address space: {exc}"
            ) from exc

    def _release(self, address: int, size: int) -> None:
        if _munmap(address, size) != 0:
            errno = ctypes.get_errno()
            raise PoolUnavailableError(f"host pool: munmap of a slot failed: {os.strerror(errno)}")

    def _map_chunk(self, address: int, chunk: int) -> None:
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        flags = mmap.MAP_SHARED | MAP_FIXED
        _call_mmap(address, self.chunk_bytes, prot, flags, self.fd, self.chunk_file_offset(chunk))

    def _unmap_chunk(self, address: int) -> None:
        try:
            _call_mmap(address, self.chunk_bytes, PROT_NONE, _RESERVED | MAP_FIXED, -1, 0)
        except OSError as exc:  # only on kernel resource limits; the chunk stays mapped
            raise PoolUnavailableError(f"host pool: unmapping a chunk failed: {exc}") from exc

    def _tensor(self, address: int, nbytes: int) -> tuple[torch.Tensor, object]:
        buffer: memoryview = _memory_view(address, nbytes, _PYBUF_WRITE)
        return torch.frombuffer(buffer, dtype=torch.uint8), buffer  # the tensor keeps `buffer` alive

    def _close(self) -> None:
        self._close_fd()
