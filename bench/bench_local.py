"""The default ``warmserve local`` run, timed, and its floors (issue 5).

Runs the command exactly as a user would after install (``python -m warmserve.operator.cli local``, all
defaults: 2 fake-GPU workers × 2 GPUs, the gateway, the scheduler; day 8 of the shipped ServeGen-derived
sample compressed into 60 s per policy; WarmServe then the ``autoscale`` baseline on the same arrivals)
and prints:

- ``default_run_s``: wall-clock seconds of the whole command, start-up and shut-down included
  (floor: ≤ 180);
- per policy: requests, completed, errors, TTFT p50/p99 (ms), SLO attainment, cold starts, promotions;
- ``p99_ratio_baseline_over_warmserve`` (floor: > 1, WarmServe's p99 TTFT lower than the baseline's).

The machine is shared with other tenants, so the TTFTs move between runs; ``--runs N`` repeats the
command N times (with seeds 0..N-1) and prints each run and how many met both floors.
Usage: ``python bench/bench_local.py [--runs N] [extra warmserve local options]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FLOOR_S = 180.0


def one_run(seed: int, extra: list[str]) -> tuple[float, list[dict[str, Any]]]:
    """Run the command once; its wall-clock seconds and its summaries."""
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        out = Path(tmp) / "summary.json"
        argv = [sys.executable, "-m", "warmserve.operator.cli", "local", "--no-progress", "--seed", str(seed)]
        argv += ["--json", str(out), *extra]
        start = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - start
        if done.returncode != 0:
            raise SystemExit(f"warmserve local failed ({done.returncode}): {done.stderr[-2000:]}")
        print(done.stdout, end="")
        return elapsed, json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args, extra = parser.parse_known_args()
    met = 0
    for seed in range(args.runs):
        elapsed, (measured, baseline) = one_run(seed, extra)
        ratio = baseline["ttft_p99"] / measured["ttft_p99"]
        for s in (measured, baseline):
            print(
                f"{s['policy']}: requests {s['requests']} completed {s['completed']} errors {s['errors']} "
                f"ttft_p50_ms {s['ttft_p50'] * 1000:.0f} ttft_p99_ms {s['ttft_p99'] * 1000:.0f} "
                f"slo_attainment {s['slo_attainment']:.3f} cold_starts {s['cold_starts']} "
                f"promotions {s['promotions']}"
            )
        ok = elapsed <= FLOOR_S and ratio > 1.0
        met += ok
        print(f"seed {seed}: default_run_s {elapsed:.1f} (floor <= {FLOOR_S:.0f})")
        print(f"seed {seed}: p99_ratio_baseline_over_warmserve {ratio:.2f} (floor > 1)  floors met: {ok}")
    print(f"runs meeting both floors: {met}/{args.runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
