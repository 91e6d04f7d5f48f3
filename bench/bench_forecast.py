"""Forecasting benchmark: backtest every forecaster on the ServeGen language models and check the floor.

Setting (issue 2): the three ServeGen language models, 14 days at 600 s windows, the first 7 days to train,
then rolling one window ahead over the last 7 days with a daily refit. Prints the per-model and overall
tables, the wall time of the whole backtest, and the two floor checks:

* ``auto`` has a lower overall peak MASE than every baseline forecaster;
* reading the trace plus backtesting all forecasters takes ≤ 60 s.

Run from the repository root: ``python bench/bench_forecast.py [--trace PATH]``. The default trace is
the ServeGen language folder when it is found beside the checkout (``SHARED`` below); without it the
shipped sample (the same series, derived) is used. Exit code 1 if a floor check fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from warmserve.operator.forecast.backtest import backtest
from warmserve.operator.forecast.cli import format_table
from warmserve.operator.forecast.concurrency import load_series
from warmserve.operator.forecast.forecasters import BASELINES, FORECASTERS
from warmserve.operator.forecast.traces import read_trace

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "traces" / "servegen" / "data" / "language"
SAMPLE = REPO / "operator" / "warmserve" / "operator" / "data" / "servegen_language_600s.csv"
WINDOW_SEC = 600.0
BUDGET_SEC = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=SHARED if SHARED.is_dir() else SAMPLE)
    args = parser.parse_args()
    started = time.perf_counter()
    loads = load_series(read_trace(args.trace), WINDOW_SEC)
    result = backtest(loads, list(FORECASTERS), train_fraction=0.5)
    elapsed = time.perf_counter() - started
    print(
        f"trace: {args.trace}\nwindows: {WINDOW_SEC:g} s, train on the first half, rolling one window ahead\n"
    )
    print(format_table(result, WINDOW_SEC))
    auto = result.overall["auto"].peak_mase
    best_baseline = min(BASELINES, key=lambda name: result.overall[name].peak_mase)
    baseline = result.overall[best_baseline].peak_mase
    beats = auto < baseline
    fast = elapsed <= BUDGET_SEC
    print(
        f"\nauto overall peak MASE {auto:.3f} vs best baseline ({best_baseline}) {baseline:.3f}: "
        f"{'PASS' if beats else 'FAIL'} ({(baseline - auto) / baseline:+.1%})"
    )
    print(
        f"backtest of all {len(FORECASTERS)} forecasters: {elapsed:.1f} s (budget {BUDGET_SEC:g} s): "
        f"{'PASS' if fast else 'FAIL'}"
    )
    print(
        f"auto overall peak MAPE {result.overall['auto'].peak_mape:.1f}% "
        f"(paper: 7.3% mean error for 5-minute peak load); per model: "
        + ", ".join(f"{m} {s['auto'].peak_mape:.1f}%" for m, s in result.models.items())
    )
    return 0 if beats and fast else 1


if __name__ == "__main__":
    sys.exit(main())
