"""Promotion and TTFT on the torch engine: the floors of issue 4 (promotion <= 20 ms and flat across model
sizes, zero copy; TTFT of a warm tiny model <= 20 ms).

For tiny Llama models of growing size (made locally), it fills a slot from the checkpoint, prepares the
replica once (prewarm), then repeats promote → one request → demote and prints, per size: weight bytes,
prepare time, median and max promotion time, median TTFT (a 6-token prompt, first token) and median
decode step. Promotion must not grow with the weight bytes.

Usage: python bench/torch_engine_switch.py [--repeats N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from warmserve.protocol.state import ModelSpec
from warmserve.worker.engines.base import GenerateRequest
from warmserve.worker.engines.torch_engine import TorchEngine, slot_from_checkpoint
from warmserve.worker.tiny_model import TinyModelSize, make_tiny_model

SIZES = (TinyModelSize(64, 2, 2, 128), TinyModelSize(256, 4, 8, 512), TinyModelSize(1024, 8, 32, 2048))
FLOOR_S = 0.020


async def measure(directory: Path, repeats: int) -> dict[str, float]:
    engine = TorchEngine()
    slot, layout = slot_from_checkpoint(directory)
    spec = ModelSpec(directory.name, str(directory), layout.total_bytes)
    start = time.perf_counter()
    prepared = await engine.prepare(spec, slot, layout)
    prepare_s = time.perf_counter() - start
    promotions, ttfts, steps = [], [], []
    request = GenerateRequest("Hello world, how are you?", max_tokens=8, ignore_eos=True)
    for _ in range(repeats):
        start = time.perf_counter()
        instance = await engine.promote(prepared, None, 16 * 2**20)
        promotions.append(time.perf_counter() - start)
        start = time.perf_counter()
        stamps = [time.perf_counter() async for _ in instance.generate(request)]
        ttfts.append(stamps[0] - start)
        steps.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
        await engine.demote(instance)
    return {
        "weight_mb": layout.total_bytes / 2**20,
        "prepare_s": prepare_s,
        "promote_ms": statistics.median(promotions) * 1e3,
        "promote_max_ms": max(promotions) * 1e3,
        "ttft_ms": statistics.median(ttfts) * 1e3,
        "step_ms": statistics.median(steps) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    header = ("model", "weights MB", "prepare s", "promote ms", "max", "TTFT ms", "step ms")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (18, 10, 9, 10, 7, 8, 8), strict=True)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            name = f"h{size.hidden}-l{size.layers}"
            row = asyncio.run(measure(make_tiny_model(Path(tmp) / name, size), args.repeats))
            rows.append(row)
            print(
                f"{name:>18} {row['weight_mb']:10.1f} {row['prepare_s']:9.2f} {row['promote_ms']:10.3f} "
                f"{row['promote_max_ms']:7.3f} {row['ttft_ms']:8.2f} {row['step_ms']:8.2f}"
            )
    worst = max(r["promote_ms"] for r in rows)
    print(f"promotion median, worst size: {worst:.3f} ms (floor {FLOOR_S * 1e3:.0f} ms)")
    print(f"TTFT of the warm tiny model: {rows[0]['ttft_ms']:.2f} ms (floor {FLOOR_S * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
