"""Forecasting at scale (issue 16, item 4): a 100-model, 30-day backtest at 600 s windows, and the
operator's periodic refit of 500 models.

The series are synthesized from the ServeGen language trace read per client (each client a model, the
busiest first, cycled when there are fewer clients than models): each client's 600 s load series is
repeated end to end up to ``--days`` days. The backtest is ``warmserve forecast``'s (train | validation |
test, rolling one window ahead, each forecaster refitted as its ``refit_days`` say on its trailing
``fit_days``): all the forecasters in one run, as the command does (``auto`` selects among the others'
forecasts), timed on all the models and on half of them to show whether the time grows linearly; with
``--each``, each forecaster is also timed on its own. The refit fits every model once (``fit_load``: mean
and peak) on a week of 300 s windows, the operator's periodic refit; its CPU time is printed.

Usage: python bench/bench_forecast_scale.py [--trace DIR] [--models 100] [--days 30] [--each]
       [--forecasters warmserve,last-value,...] [--refit-models 500] [--refit-forecasters warmserve,auto]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from warmserve.operator.forecast.backtest import backtest
from warmserve.operator.forecast.concurrency import SECONDS_PER_DAY, LoadSeries, load_series
from warmserve.operator.forecast.forecasters import FORECASTERS, fit_load, make_forecaster
from warmserve.operator.forecast.traces import ReaderOptions, read_trace

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "servegen" / "data" / "language"
WINDOW_SEC = 600.0
BUDGET_SEC = 120.0  # the floor for the whole backtest
REFIT_BUDGET_SEC = 10.0


def synthesize(trace: Path, models: int, days: float) -> list[LoadSeries]:
    """``models`` load series of ``days`` days at 600 s windows from the trace's clients (see above)."""
    clients = load_series(read_trace(trace, ReaderOptions(per_client=True)), WINDOW_SEC)
    clients = sorted(clients, key=lambda s: -float(np.nansum(s.mean)))
    windows = round(days * SECONDS_PER_DAY / WINDOW_SEC)
    out = []
    for i in range(models):
        c = clients[i % len(clients)]
        reps = -(-windows // len(c.mean))
        mean, peak = np.tile(c.mean, reps)[:windows], np.tile(c.peak, reps)[:windows]
        out.append(LoadSeries(f"model-{i:03d}", c.start_sec, WINDOW_SEC, mean, peak))
    return out


def time_backtest(loads: list[LoadSeries], names: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one backtest (the CPU time says what the work costs when other jobs share
    the cores and stretch the wall time)."""
    started, cpu = time.perf_counter(), time.process_time()
    backtest(loads, names, train_fraction=0.5)
    return time.perf_counter() - started, time.process_time() - cpu


def time_refit(loads: list[LoadSeries], models: int, name: str) -> float:
    """CPU seconds to fit ``models`` models on a week of 300 s windows (each a week of a synthesized
    series, the 600 s values repeated)."""
    week = round(7 * SECONDS_PER_DAY / 300.0)
    forecaster = make_forecaster(name, round(SECONDS_PER_DAY / 300.0))
    histories = [(np.repeat(s.mean, 2)[:week], np.repeat(s.peak, 2)[:week]) for s in loads]
    started = time.process_time()
    for i in range(models):
        mean, peak = histories[i % len(histories)]
        fit_load(forecaster, mean, peak)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--forecasters", default=",".join(FORECASTERS))
    parser.add_argument("--each", action="store_true", help="also time each forecaster on its own")
    parser.add_argument("--refit-models", type=int, default=500)
    parser.add_argument("--refit-forecasters", default="warmserve,auto")
    args = parser.parse_args()
    started = time.perf_counter()
    loads = synthesize(args.trace, args.models, args.days)
    print(
        f"{len(loads)} models x {len(loads[0].mean)} windows of {WINDOW_SEC:g} s "
        f"(read and synthesized in {time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    names = args.forecasters.split(",")
    for name in names if args.each else []:
        alone, cpu = time_backtest(loads, [name])
        print(f"backtest {name:<18} {alone:7.1f} s, {cpu:.1f} s CPU ({alone / len(loads):.3f} s a model)")
    half, half_cpu = time_backtest(loads[: len(loads) // 2], names)
    total, cpu = time_backtest(loads, names)
    verdict = "PASS" if total <= BUDGET_SEC else "FAIL"
    print(
        f"backtest of {args.forecasters} on {len(loads)} models: {total:.1f} s, {cpu:.1f} s CPU "
        f"(half the models {half:.1f} s, {half_cpu:.1f} s CPU; CPU ratio {cpu / half_cpu:.2f}; "
        f"budget {BUDGET_SEC:g} s): {verdict}"
    )
    for name in args.refit_forecasters.split(","):
        cpu = time_refit(loads, args.refit_models, name)
        verdict = "PASS" if cpu <= REFIT_BUDGET_SEC else "FAIL"
        budget = f"budget {REFIT_BUDGET_SEC:g} s"
        print(f"refit of {args.refit_models} models, {name}: {cpu:.1f} s CPU ({budget}): {verdict}")


if __name__ == "__main__":
    main()
