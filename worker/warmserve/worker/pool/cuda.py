"""CUDA backend: CUDA virtual memory management (VMM) through cuda-python's driver API. GPU only.

Selected only by ``backend="cuda"``; cuda-python (the ``gpu`` extra) is imported when such a pool is
created, so this module imports anywhere. Each chunk is one physical allocation (``cuMemCreate``), all
created with the pool, so the GPU memory is held from the start as the design wants. A slot is a
``cuMemAddressReserve`` range; mapping is ``cuMemMap`` + ``cuMemSetAccess``, unmapping ``cuMemUnmap`` (the
range stays reserved). Views are zero-copy CUDA tensors built from ``__cuda_array_interface__``. The
pool works in the device's primary context, the one PyTorch uses, so its pointers are valid for torch.

Failure: a missing cuda-python or driver, or a driver error, raises
:class:`~warmserve.worker.pool.base.PoolError` naming the call and the CUDA error.
This backend is not exercised on CPU-only machines; its tests are skipped there.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from warmserve.worker.pool.base import DEFAULT_CHUNK_BYTES, MemoryPool, PoolRequestError, PoolUnavailableError


def _load_driver() -> Any:
    try:
        return importlib.import_module("cuda.bindings.driver")
    except ImportError as exc:
        raise PoolRequestError(
            "the cuda pool backend needs cuda-python (pip install 'warmserve[gpu]') and a CUDA GPU"
        ) from exc


class _CudaError(OSError):
    """A CUDA driver call failed (an OSError so the base class rolls a partial map back)."""


class _DeviceBytes:
    """Describes device memory to torch via ``__cuda_array_interface__``; torch keeps it alive per view."""

    def __init__(self, address: int, nbytes: int) -> None:
        self.__cuda_array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (address, False),
            "strides": None,
            "version": 3,
        }


class CudaPool(MemoryPool):
    """A pool of GPU ``device``'s memory, in chunks created up front with ``cuMemCreate``."""

    backend = "cuda"

    def __init__(
        self, capacity_bytes: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES, *, device: int = 0
    ) -> None:
        self._driver = _load_driver()
        self.device = device
        try:
            self._setup_device()
        except _CudaError as exc:
            raise PoolUnavailableError(f"cuda pool: {exc}") from exc
        super().__init__(capacity_bytes, chunk_bytes)
        self._handles: list[Any] = []
        try:
            for _ in range(self.num_chunks):
                self._handles.append(self._call("cuMemCreate", chunk_bytes, self._prop, 0))
        except _CudaError as exc:
            self._close()
            raise PoolUnavailableError(
                f"cuda pool: cannot create {self.num_chunks} chunks on GPU {device}: {exc}"
            ) from exc

    def _call(self, name: str, *args: Any) -> Any:
        """Call a driver function; return its value(s) after the status, raise _CudaError on failure."""
        status, *values = getattr(self._driver, name)(*args)
        if status != self._driver.CUresult.CUDA_SUCCESS:
            _, message = self._driver.cuGetErrorName(status)
            raise _CudaError(f"{name} failed: {message.decode() if isinstance(message, bytes) else message}")
        return values[0] if len(values) == 1 else None

    def _setup_device(self) -> None:
        drv = self._driver
        self._call("cuInit", 0)
        dev = self._call("cuDeviceGet", self.device)
        self._call("cuCtxSetCurrent", self._call("cuDevicePrimaryCtxRetain", dev))
        prop = drv.CUmemAllocationProp()
        prop.type = drv.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
        prop.location.type = drv.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
        prop.location.id = self.device
        self._prop = prop
        access = drv.CUmemAccessDesc()
        access.location.type = drv.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
        access.location.id = self.device
        access.flags = drv.CUmemAccess_flags.CU_MEM_ACCESS_FLAGS_PROT_READWRITE
        self._access = access
        minimum = drv.CUmemAllocationGranularity_flags.CU_MEM_ALLOC_GRANULARITY_MINIMUM
        self._granularity = int(self._call("cuMemGetAllocationGranularity", prop, minimum))

    def granularity(self) -> int:
        return self._granularity

    def _reserve(self, size: int) -> int:
        try:
            return int(self._call("cuMemAddressReserve", size, self.chunk_bytes, 0, 0))
        except _CudaError as exc:
            raise PoolUnavailableError(f"cuda pool: {exc}") from exc

    def _release(self, address: int, size: int) -> None:
        try:
            self._call("cuMemAddressFree", address, size)
        except _CudaError as exc:
            raise PoolUnavailableError(f"cuda pool: {exc}") from exc

    def _map_chunk(self, address: int, chunk: int) -> None:
        self._call("cuMemMap", address, self.chunk_bytes, 0, self._handles[chunk], 0)
        try:
            self._call("cuMemSetAccess", address, self.chunk_bytes, [self._access], 1)
        except _CudaError:
            self._call("cuMemUnmap", address, self.chunk_bytes)
            raise

    def _unmap_chunk(self, address: int) -> None:
        try:
            self._call("cuMemUnmap", address, self.chunk_bytes)
        except _CudaError as exc:
            raise PoolUnavailableError(f"cuda pool: {exc}") from exc

    def _tensor(self, address: int, nbytes: int) -> tuple[torch.Tensor, object]:
        owner = _DeviceBytes(address, nbytes)
        return torch.as_tensor(owner, device=f"cuda:{self.device}"), owner

    def _close(self) -> None:
        for handle in self._handles:
            self._call("cuMemRelease", handle)
        self._handles = []
