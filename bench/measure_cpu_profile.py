"""Measure this machine's `cpu` profile for the timing model (warmserve.worker.timing.GPU_PROFILES["cpu"]).

Prints each figure the profile stores, measured the way its comment says:
- peak_flops: fp32 1024×1024 matmuls on the torch threads the engines use (2);
- memory_bandwidth: bytes read + written per second copying a 512 MiB tensor; host_bandwidth: bytes
  copied per second (what loading a slot from the host page cache costs);
- disk_bandwidth: reading a 256 MiB file back after asking the kernel to drop it from the page cache;
- step_overhead_s: one decode step of the default tiny model (its FLOPs and bytes are negligible, so the
  step is all overhead), through the torch engine;
- promotion_s: promoting a prewarmed tiny model on the torch engine (median);
- engine_start_s: a fresh Python process importing torch and transformers and building the tiny model.
The remote tier cannot be measured here (no network) and is not printed.

Usage: python bench/measure_cpu_profile.py
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

THREADS = 2


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """The fastest of ``repeats`` runs, in seconds (the least disturbed by the other tenants)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_flops() -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 2 * 1024**3 / best_of(20, lambda: a @ b)


def copy_bandwidth() -> float:
    src = torch.ones(512 * 2**20, dtype=torch.uint8)
    dst = torch.empty_like(src)
    return src.numel() / best_of(5, lambda: dst.copy_(src))


def disk_bandwidth() -> float:
    size = 256 * 2**20
    with tempfile.NamedTemporaryFile(dir=Path.home()) as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())

        def read_cold() -> None:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            with open(f.name, "rb", buffering=0) as r:
                while r.read(16 * 2**20):
                    pass

        return size / best_of(3, read_cold)


def engine_figures(model_dir: Path) -> tuple[float, float]:
    """(decode step seconds, promotion seconds) of the tiny model on the torch engine."""
    from warmserve.protocol.state import ModelSpec
    from warmserve.worker.engines.base import GenerateRequest
    from warmserve.worker.engines.torch_engine import TorchEngine, slot_from_checkpoint

    async def run() -> tuple[float, float]:
        engine = TorchEngine(threads=THREADS)
        slot, layout = slot_from_checkpoint(model_dir)
        spec = ModelSpec("tiny", str(model_dir), layout.total_bytes)
        prepared = await engine.prepare(spec, slot, layout)
        promotions = []
        for _ in range(20):
            start = time.perf_counter()
            instance = await engine.promote(prepared, None, 64 * 2**20)
            promotions.append(time.perf_counter() - start)
            await engine.demote(instance)
        instance = await engine.promote(prepared, None, 64 * 2**20)
        stamps = []
        async for _ in instance.generate(GenerateRequest(prompt="Hello", max_tokens=64, ignore_eos=True)):
            stamps.append(time.perf_counter())
        steps = [b - a for a, b in itertools.pairwise(stamps)]
        await engine.demote(instance)
        return statistics.median(steps), statistics.median(promotions)

    return asyncio.run(run())


def engine_start_seconds(model_dir: Path) -> float:
    code = (
        "import torch, transformers; from transformers import AutoModelForCausalLM;"
        f"AutoModelForCausalLM.from_pretrained({str(model_dir)!r})"
    )
    return best_of(3, lambda: subprocess.run([sys.executable, "-c", code], check=True, capture_output=True))


def main() -> None:
    from warmserve.worker.tiny_model import make_tiny_model

    torch.set_num_threads(THREADS)
    print(f"peak_flops        {matmul_flops() / 1e9:8.1f} GFLOP/s (fp32 matmul, {THREADS} threads)")
    copy = copy_bandwidth()
    print(f"memory_bandwidth  {2 * copy / 1e9:8.1f} GB/s (read + write)")
    print(f"host_bandwidth    {copy / 1e9:8.1f} GB/s (bytes copied)")
    print(f"disk_bandwidth    {disk_bandwidth() / 1e9:8.2f} GB/s (cold read)")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_model(Path(tmp) / "tiny")
        step, promotion = engine_figures(model_dir)
        print(f"step_overhead_s   {step * 1e3:8.2f} ms (tiny-model decode step, torch engine)")
        print(f"promotion_s       {promotion * 1e3:8.3f} ms (tiny model, torch engine)")
        start = engine_start_seconds(model_dir)
        print(f"engine_start_s    {start:8.2f} s (python + torch + transformers + model)")


if __name__ == "__main__":
    main()
