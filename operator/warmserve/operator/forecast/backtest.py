"""Rolling one-window-ahead backtest of forecasters over load series, and its error metrics.

Each series is split once: the first ``train_fraction`` of its windows is history only; every later window
is forecast one window ahead from the windows before it. Forecasters are refitted once a day (every
``period`` windows) on all data before the refit and predict the day after it with that fit, as they
would online.

Metrics, per model and per forecaster, for the window mean and the window peak:

* MAPE — mean of |actual − forecast| / actual over test windows with actual > 0, in percent (windows with
  no load have no percentage error and are skipped);
* MASE — mean absolute error over the test windows divided by the mean absolute one-window change of the
  training part (the in-sample naive forecast's error; Hyndman & Koehler 2006). Below 1 beats that naive.

A metric with nothing to average (no positive actual, a constant training part) is NaN. Overall figures
are the mean over models of the finite per-model figures, so each model weighs the same.

Real logs hold models with a handful of windows: such a model is left out with the reason
(``BacktestResult.skipped``) instead of aborting the run, and a forecaster that had less history than it
needs to forecast as itself is named per model (``BacktestResult.fallbacks``), because it was scored as its
fallback, not as itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from warmserve.operator.forecast.concurrency import LoadSeries
from warmserve.operator.forecast.forecasters import Forecaster, make_forecaster
from warmserve.operator.forecast.traces import FloatArray
from warmserve.protocol.errors import InvalidFieldError


@dataclass(frozen=True)
class Scores:
    """Errors of one forecaster on one model (or overall)."""

    mean_mape: float
    peak_mape: float
    mean_mase: float
    peak_mase: float
    peak_exceeded: float  # calibration: % of test windows whose actual peak was above the forecast


@dataclass(frozen=True)
class BacktestResult:
    """``models[model][forecaster]`` and ``overall[forecaster]``; ``train_windows[model]`` is the split.

    ``skipped[model]`` says why a model was not backtested; ``fallbacks[model][forecaster]`` why a
    forecaster's scores on that model are its fallback's (for part or all of the test span).
    """

    overall: Mapping[str, Scores]
    models: Mapping[str, Mapping[str, Scores]]
    train_windows: Mapping[str, int]
    skipped: Mapping[str, str]
    fallbacks: Mapping[str, Mapping[str, str]]


def mape(actual: FloatArray, predicted: FloatArray) -> float:
    """Mean absolute percentage error (%) over windows with a finite, positive actual; NaN if none."""
    usable = np.isfinite(actual) & (actual > 0)
    if not usable.any():
        return math.nan
    return float(np.mean(np.abs(actual[usable] - predicted[usable]) / actual[usable]) * 100.0)


def exceeded(actual: FloatArray, predicted: FloatArray) -> float:
    """Share (%) of windows with a finite actual above the forecast (an under-forecast, which costs a cold
    start); NaN if no window has a finite actual."""
    usable = np.isfinite(actual)
    if not usable.any():
        return math.nan
    return float(np.mean(actual[usable] > predicted[usable]) * 100.0)


def mase(actual: FloatArray, predicted: FloatArray, training: FloatArray) -> float:
    """Mean absolute error scaled by the training part's mean absolute one-step change; NaN if undefined."""
    steps = np.abs(np.diff(training))
    steps = steps[np.isfinite(steps)]
    usable = np.isfinite(actual)
    if not usable.any() or len(steps) == 0 or steps.mean() == 0:
        return math.nan
    return float(np.mean(np.abs(actual[usable] - predicted[usable])) / steps.mean())


def rolling_one_step(forecaster: Forecaster, series: FloatArray, train: int) -> FloatArray:
    """One-window-ahead forecasts of ``series[train:]``, refitting every ``forecaster.period`` windows."""
    predictions = []
    for block in range(train, len(series), forecaster.period):
        end = min(block + forecaster.period, len(series))
        fitted = forecaster.fit(series[:block])
        predictions.append(forecaster.one_step(fitted, series[:end], block))
    return np.concatenate(predictions) if predictions else np.zeros(0)


def backtest(
    loads: Sequence[LoadSeries], names: Sequence[str], train_fraction: float = 0.5
) -> BacktestResult:
    """Backtest every forecaster in ``names`` on every series of ``loads`` with enough windows.

    ``InvalidFieldError`` if ``train_fraction`` is not a fraction, a name is unknown (both before any fit),
    or no model has windows for a training and a test part.
    """
    if not 0 < train_fraction < 1:
        raise InvalidFieldError("train_fraction", "a fraction strictly between 0 and 1", train_fraction)
    for name in names:
        make_forecaster(name, 1)
    models: dict[str, dict[str, Scores]] = {}
    splits: dict[str, int] = {}
    skipped: dict[str, str] = {}
    fallbacks: dict[str, dict[str, str]] = {}
    for load in loads:
        train = round(len(load.mean) * train_fraction)
        if not 1 < train < len(load.mean):
            skipped[load.model] = f"{len(load.mean)} windows: too few for a training and a test part"
            continue
        splits[load.model] = train
        forecasters = [make_forecaster(name, load.windows_per_day) for name in names]
        models[load.model] = {f.name: _score(f, load, train) for f in forecasters}
        fallbacks[load.model] = _fallbacks(forecasters, train, len(load.mean))
    if not models:
        raise InvalidFieldError(
            "trace", "at least one model with windows for a training and a test part", skipped
        )
    overall = {name: _average([models[m][name] for m in models]) for name in names}
    return BacktestResult(overall, models, splits, skipped, fallbacks)


def _fallbacks(forecasters: Sequence[Forecaster], train: int, windows: int) -> dict[str, str]:
    """Why each forecaster that had too little history was scored (in part) as its fallback."""
    short = {}
    for f in forecasters:
        if f.min_history > train:
            share = "all" if f.min_history >= windows else f"the first {f.min_history - train}"
            short[f.name] = (
                f"needs {f.min_history} windows of history, had {train}: "
                f"its fallback forecast {share} of the {windows - train} test windows"
            )
    return short


def _score(forecaster: Forecaster, load: LoadSeries, train: int) -> Scores:
    mean = rolling_one_step(forecaster, load.mean, train)
    peak = rolling_one_step(forecaster, load.peak, train)
    return Scores(
        mape(load.mean[train:], mean),
        mape(load.peak[train:], peak),
        mase(load.mean[train:], mean, load.mean[:train]),
        mase(load.peak[train:], peak, load.peak[:train]),
        exceeded(load.peak[train:], peak),
    )


def _average(scores: Sequence[Scores]) -> Scores:
    def mean_of(values: list[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.nan

    return Scores(
        mean_of([s.mean_mape for s in scores]),
        mean_of([s.peak_mape for s in scores]),
        mean_of([s.mean_mase for s in scores]),
        mean_of([s.peak_mase for s in scores]),
        mean_of([s.peak_exceeded for s in scores]),
    )
