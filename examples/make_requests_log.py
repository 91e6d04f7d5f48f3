"""Write a small per-request log of three named models, to try `warmserve forecast`, `simulate` and `local`
on (docs/tutorial.md).

Two days, one row per request: arrival time in seconds, the model, prompt and completion tokens. Each
model has its own daily rhythm: `chat` is busy in the day, `code` in working hours, `batch` at night.

Usage: python3 examples/make_requests_log.py OUT.csv [--seed N]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

DAY = 86_400
#: model -> (requests per hour at its peak, hour of the peak)
MODELS = {"chat": (240, 14), "code": (120, 11), "batch": (60, 2)}


def rate_per_hour(peak: float, peak_hour: int, hour: float) -> float:
    """A daily cosine between a tenth of the peak and the peak."""
    phase = 2 * math.pi * (hour - peak_hour) / 24
    return peak * (0.55 + 0.45 * math.cos(phase))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the CSV file to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    for hour in range(2 * 24):
        for model, (peak, peak_hour) in MODELS.items():
            count = rng.poisson(rate_per_hour(peak, peak_hour, hour % 24))
            for t in np.sort(rng.uniform(hour * 3600, (hour + 1) * 3600, count)):
                rows.append((t, model, int(rng.integers(20, 800)), int(rng.integers(10, 300))))
    rows.sort()
    lines = ["time,model,prompt_tokens,completion_tokens"]
    lines += [f"{t:.3f},{m},{p},{c}" for t, m, p, c in rows]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(rows)} requests of {len(MODELS)} models over 2 days to {args.out}")


if __name__ == "__main__":
    main()
