"""Load bandwidth: page cache -> pool slot, against this machine's memcpy bandwidth (floor: >= 70%).

Prints:
  memcpy_GBps   best torch ``copy_`` of a SIZE uint8 buffer into another (with the threads torch uses),
                alternating with the load runs so that both see the same load from other processes
  map_seconds   mapping the slot's chunks (page tables are filled later, on first touch, by the load)
  load_GBps     best ModelStore.load of a SIZE safetensors checkpoint that is already in the page cache,
                into a slot whose pages are already touched (the copy itself)
  load_ratio    load_GBps / memcpy_GBps, and whether it meets the 0.70 floor
  prewarm_GBps  map + first load into a fresh slot, end to end, page faults included: what a prewarm
                costs on this host backend

The checkpoint is written to a temporary directory under /tmp and removed at the end; the loaded bytes
are checked against safetensors' own reader. Run from the repo root:
``python bench/bench_load.py [--gib 1] [--threads 2] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from warmserve.worker.pool import Slot
from warmserve.worker.pool.base import DEFAULT_CHUNK_BYTES
from warmserve.worker.pool.host import HostPool
from warmserve.worker.store import Checkpoint, LoadState, ModelStore, slot_tensors

FLOOR = 0.70
TENSORS = 16  # a checkpoint is many tensors, not one blob
MODEL = "bench-model"


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def write_checkpoint(root: Path, nbytes: int) -> Path:
    """``TENSORS`` bf16 tensors totalling ``nbytes``, read once so that the file sits in the page cache."""
    path = root / MODEL
    path.mkdir()
    (path / "config.json").write_text('{"model_type": "bench"}')
    gen = torch.Generator().manual_seed(0)
    count = nbytes // TENSORS // 2
    tensors = {
        f"layers.{i}.weight": torch.randn(count, generator=gen).to(torch.bfloat16) for i in range(TENSORS)
    }
    save_file(tensors, str(path / "model.safetensors"))
    del tensors
    with (path / "model.safetensors").open("rb", buffering=0) as f:
        while f.read(64 << 20):
            pass
    return path / "model.safetensors"


def load_seconds(store: ModelStore, checkpoint: Checkpoint, slot: Slot, threads: int) -> float:
    """Wall time of one load into an already mapped slot; exits if the load does not complete."""
    start = time.perf_counter()
    progress = store.load(checkpoint, slot, threads=threads).wait()
    elapsed = time.perf_counter() - start
    if progress.state is not LoadState.DONE:
        raise SystemExit(f"load {progress.state}: {progress.reason}")
    return elapsed


def alternate(nbytes: int, repeats: int, load: Callable[[], float]) -> tuple[list[float], list[float]]:
    """Seconds of memcpy runs (``nbytes``) and of loads, alternating so both see the same background load."""
    src = torch.ones(nbytes, dtype=torch.uint8)
    dst = torch.zeros(nbytes, dtype=torch.uint8)
    copies, loads = [], []
    for _ in range(repeats):
        copies.append(_timed(lambda: dst.copy_(src)))
        loads.append(load())
    return copies, loads


def check_bytes(file: Path, checkpoint: Checkpoint, slot: Slot) -> None:
    """The slot holds exactly what safetensors reads from the file (a benchmark of a wrong copy is void)."""
    loaded = slot_tensors(checkpoint.layout, slot)
    with safe_open(str(file), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            if not torch.equal(loaded[name], f.get_tensor(name)):
                raise SystemExit(f"loaded tensor {name} differs from the file")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gib", type=float, default=1.0, help="checkpoint and memcpy size in GiB")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="reader threads")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    nbytes = int(args.gib * (1 << 30))

    with tempfile.TemporaryDirectory(dir="/tmp", prefix="warmserve-bench-") as tmp:
        file = write_checkpoint(Path(tmp), nbytes)
        store = ModelStore(tmp)
        checkpoint = store.inspect(MODEL)
        capacity = -(-checkpoint.total_bytes // DEFAULT_CHUNK_BYTES) * DEFAULT_CHUNK_BYTES
        with HostPool(capacity) as pool:
            slot = pool.create_slot()
            map_seconds = _timed(lambda: pool.map(slot, 0, checkpoint.total_bytes))
            chunks = f"{slot.mapped_chunks} chunks of {pool.chunk_bytes >> 20} MiB"
            first_load = load_seconds(store, checkpoint, slot, args.threads)
            copies, loads = alternate(
                nbytes, args.repeats, lambda: load_seconds(store, checkpoint, slot, args.threads)
            )
            check_bytes(file, checkpoint, slot)
            gc.collect()
    weight_bytes = sum(s.nbytes for s in checkpoint.sources)
    memcpy = nbytes / min(copies) / 1e9
    load = weight_bytes / min(loads) / 1e9
    ratio = load / memcpy
    threads = torch.get_num_threads()
    print(f"memcpy_GBps   {memcpy:8.2f}   (torch copy_ of {nbytes >> 20} MiB, {threads} threads)")
    print(f"map_seconds   {map_seconds:8.3f}   ({chunks})")
    how = f"page cache -> slot, {args.threads} reader threads, best of {args.repeats}"
    print(f"load_GBps     {load:8.2f}   ({how})")
    print(f"load_ratio    {ratio:8.2f}   ({'meets' if ratio >= FLOOR else 'BELOW'} the {FLOOR:.2f} floor)")
    prewarm = weight_bytes / (map_seconds + first_load) / 1e9
    print(f"prewarm_GBps  {prewarm:8.2f}   (map + first load into a fresh slot, end to end)")


if __name__ == "__main__":
    main()
