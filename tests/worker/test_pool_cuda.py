"""The CUDA VMM backend: real remapping on a GPU; here only its refusal without cuda-python is testable."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from warmserve.worker.pool import PoolError, create_pool

CHUNK = 2 * 1024 * 1024
HAS_CUDA_PYTHON = importlib.util.find_spec("cuda") is not None and (
    importlib.util.find_spec("cuda.bindings") is not None
)
NEEDS_GPU = pytest.mark.skipif(
    not (HAS_CUDA_PYTHON and torch.cuda.is_available()), reason="no CUDA GPU on this machine"
)


@pytest.mark.skipif(HAS_CUDA_PYTHON, reason="cuda-python is installed: the refusal path cannot be reached")
def test_cuda_backend_without_cuda_python_is_refused_clearly() -> None:
    with pytest.raises(PoolError, match=r"needs cuda-python"):
        create_pool("cuda", 4 * CHUNK, CHUNK)


@pytest.mark.gpu
@NEEDS_GPU
def test_cuda_slots_share_a_chunk_and_unmap_cleanly() -> None:
    with create_pool("cuda", 4 * CHUNK, CHUNK) as pool:
        a, b = pool.create_slot(), pool.create_slot()
        pool.map(a, 0, CHUNK)
        pool.share(a, 0, b, CHUNK, CHUNK)
        writer, reader = a.view(0, CHUNK), b.view(CHUNK, CHUNK)
        assert writer.device.type == "cuda"
        writer[:4] = torch.tensor([1, 2, 3, 4], dtype=torch.uint8, device=writer.device)
        torch.cuda.synchronize()
        assert reader[:4].cpu().tolist() == [1, 2, 3, 4]
        del writer, reader
        pool.unmap(a, 0, CHUNK)
        pool.unmap(b, CHUNK, CHUNK)
        assert pool.used_bytes == 0
