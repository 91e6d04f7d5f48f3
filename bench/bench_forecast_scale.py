"""Forecasting at scale (issue 16, item 4): a 100-model, 30-day backtest at 600 s windows, and the
operator's periodic refit of 500 models.

The series are synthesized from the ServeGen language trace read per client (each client a model, the
busiest first, cycled when there are fewer clients than models): each client's 600 s load series is
repeated end to end up to ``--days`` days. The backtest is ``warmserve forecast``'s (train | validation |
test, rolling one window ahead, each forecaster refitted as its ``refit_days`` say on its trailing
``fit_days``): all the forecasters in one run, as the command does (``auto`` selects among the others'
forecasts), timed on all the models and on half of them to show whether the time grows linearly; with
``--each``, each forecaster is also timed on its own.

The operator's refit (``--refit-forecasters``; docs/forecasting.md, "Refit cost"): a **full refit round**,
``fit_load`` (mean and peak) of ``--refit-models`` models each on a week of 300 s windows, fitted from
nothing — the issue's floor (≤ 10 s of CPU for 500 models), PASS/FAIL per forecaster; for ``auto`` also a
round that keeps its choice and refits the chosen candidate alone (what 6 refits in 7 do). Then the **CPU
of a day** of operation: the refits the forecaster's cadence makes in a day (each model every
``refit_days``, ``auto``'s comparisons every ``selection_days``) plus one ``forecast`` per model at each
of the day's 288 closed windows (the fit's filter over the windows since it; timed on ``--filter-models``
models with a fit half a refit period old). The forecasts run in the scheduler's tick, the refits in a
worker thread.

Usage: python bench/bench_forecast_scale.py [--trace DIR] [--models 100] [--days 30] [--each]
       [--forecasters warmserve,last-value,...] [--refit-models 500] [--refit-forecasters warmserve,auto]
       [--filter-models 20] [--skip-backtest]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from warmserve.operator.forecast.backtest import backtest
from warmserve.operator.forecast.concurrency import SECONDS_PER_DAY, LoadSeries, load_series
from warmserve.operator.forecast.forecasters import (
    FORECASTERS,
    Forecaster,
    LoadFit,
    fit_load,
    forecast,
    make_forecaster,
)
from warmserve.operator.forecast.traces import FloatArray, ReaderOptions, read_trace

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "servegen" / "data" / "language"
WINDOW_SEC = 600.0
BUDGET_SEC = 120.0  # the floor for the whole backtest
REFIT_BUDGET_SEC = 10.0  # the floor for a refit round of 500 models
WINDOWS_PER_DAY = round(SECONDS_PER_DAY / 300.0)  # the operator's fits: 300 s windows
WEEK = 7 * WINDOWS_PER_DAY


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


def refit_histories(loads: list[LoadSeries]) -> list[tuple[FloatArray, FloatArray]]:
    """Each synthesized series at 300 s windows (the 600 s values repeated), for the operator's fits."""
    return [(np.repeat(s.mean, 2), np.repeat(s.peak, 2)) for s in loads]


def time_refit(
    histories: list[tuple[FloatArray, FloatArray]],
    models: int,
    forecaster: Forecaster,
    previous: list[LoadFit] | None = None,
) -> tuple[float, list[LoadFit]]:
    """CPU seconds of one refit round: ``fit_load`` of ``models`` models on a week of 300 s windows (the
    histories cycled), given each model's ``previous`` fit (``None``: fits from nothing), and the fits."""
    fits = []
    started = time.process_time()
    for i in range(models):
        mean, peak = histories[i % len(histories)]
        before = previous[i] if previous is not None else None
        fits.append(fit_load(forecaster, mean[:WEEK], peak[:WEEK], before))
    return time.process_time() - started, fits


def time_filters(
    histories: list[tuple[FloatArray, FloatArray]], fits: list[LoadFit], since_fit: int
) -> float:
    """CPU seconds of one ``forecast`` (mean and peak, the next two windows) from each fit on its week
    and the ``since_fit`` windows after it, mean over the fits: the operator's step at a closed window."""
    started = time.process_time()
    for i, fit in enumerate(fits):
        mean, peak = histories[i % len(histories)]
        forecast(fit, mean[: WEEK + since_fit], peak[: WEEK + since_fit], 2)
    return (time.process_time() - started) / len(fits)


def steady_state(histories: list[tuple[FloatArray, FloatArray]], models: int, sample: int, name: str) -> None:
    """Print one forecaster's full refit round of ``models`` models (the floor's figure, PASS/FAIL) and
    its CPU per day of operation: the refits its cadence makes each day plus a forecast per model at each
    closed window (measured on ``sample`` models, a fit half a refit period old)."""
    forecaster = make_forecaster(name, WINDOWS_PER_DAY)
    time_filters(histories, time_refit(histories, 1, forecaster)[1], 1)  # the imports, outside the timing
    full, fits = time_refit(histories, models, forecaster)
    verdict = "PASS" if full <= REFIT_BUDGET_SEC else "FAIL"
    budget = f"floor {REFIT_BUDGET_SEC:g} s"
    print(f"refit round of {models} models, {name}: {full:.1f} s CPU ({budget}): {verdict}")
    refits_per_day = 0.0 if forecaster.refit_days is None else 1.0 / forecaster.refit_days
    selection_days = getattr(forecaster, "selection_days", forecaster.refit_days)
    refit = full
    if forecaster.refit_days is not None and selection_days != forecaster.refit_days:
        kept, _ = time_refit(histories, models, forecaster, fits)  # the choice kept, its candidate refitted
        share = forecaster.refit_days / selection_days
        refit = share * full + (1 - share) * kept
        print(
            f"  a refit keeping {name}'s choice (all but 1 in {selection_days / forecaster.refit_days:g}): "
            f"{kept:.1f} s CPU for {models} models"
        )
    age = 0 if forecaster.refit_days is None else forecaster.refit_days * WINDOWS_PER_DAY // 2
    per_forecast = time_filters(histories, fits[:sample], age)
    filters = per_forecast * models * WINDOWS_PER_DAY
    every = f"each model every {forecaster.refit_days} d" if forecaster.refit_days else "nothing to refit"
    print(
        f"  a day of {models} models: refits {refit * refits_per_day:.1f} s ({every}) + forecasts "
        f"{filters:.1f} s ({per_forecast * 1000:.2f} ms a model at each of {WINDOWS_PER_DAY} windows, "
        f"{per_forecast * models:.2f} s a window, in the tick) = {refit * refits_per_day + filters:.1f} s CPU"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--forecasters", default=",".join(FORECASTERS))
    parser.add_argument("--each", action="store_true", help="also time each forecaster on its own")
    parser.add_argument("--refit-models", type=int, default=500)
    parser.add_argument("--refit-forecasters", default="warmserve,auto")
    parser.add_argument("--filter-models", type=int, default=20, help="models the forecasts are timed on")
    parser.add_argument("--skip-backtest", action="store_true", help="time the operator's refits only")
    args = parser.parse_args()
    started = time.perf_counter()
    loads = synthesize(args.trace, args.models, args.days)
    print(
        f"{len(loads)} models x {len(loads[0].mean)} windows of {WINDOW_SEC:g} s "
        f"(read and synthesized in {time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    names = args.forecasters.split(",")
    for name in names if args.each and not args.skip_backtest else []:
        alone, cpu = time_backtest(loads, [name])
        print(f"backtest {name:<18} {alone:7.1f} s, {cpu:.1f} s CPU ({alone / len(loads):.3f} s a model)")
    if not args.skip_backtest:
        half, half_cpu = time_backtest(loads[: len(loads) // 2], names)
        total, cpu = time_backtest(loads, names)
        verdict = "PASS" if total <= BUDGET_SEC else "FAIL"
        print(
            f"backtest of {args.forecasters} on {len(loads)} models: {total:.1f} s, {cpu:.1f} s CPU "
            f"(half the models {half:.1f} s, {half_cpu:.1f} s CPU; CPU ratio {cpu / half_cpu:.2f}; "
            f"budget {BUDGET_SEC:g} s): {verdict}"
        )
    histories = refit_histories(loads)
    for name in args.refit_forecasters.split(","):
        steady_state(histories, args.refit_models, args.filter_models, name)


if __name__ == "__main__":
    main()
