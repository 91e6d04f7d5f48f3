"""Rolling one-window-ahead backtest of forecasters over load series, and its error metrics.

Each series is split in three, in time order: **train | validation | test**. The windows before the test
span (the first ``train_fraction``) are history only; of them, the last :data:`VALIDATION_SHARE` are the
validation span. Every window from the validation span on is forecast one window ahead from the windows
before it, each forecaster refitted every ``refit_days`` days on its trailing ``fit_days`` (see
:class:`~warmserve.operator.forecast.forecasters.Forecaster`) as it would be online, so nothing is peeked
at and the cost is linear in the windows. What is learned from forecasts — the calibration factor of the
peak bound, and which forecaster ``auto`` uses on a model — is learned on the validation span only and
then applied, frozen, to the test span, on which every figure is scored.

Metrics, per model and per forecaster, for the window mean and the window peak:

* MAPE — mean of |actual − forecast| / actual over test windows with actual > 0, in percent (windows with
  no load have no percentage error and are skipped);
* MASE — mean absolute error over the test windows divided by the mean absolute one-window change of the
  windows before the test span (the in-sample naive forecast's error; Hyndman & Koehler 2006). Below 1
  beats that naive;
* peak loss — the pinball loss at :data:`~warmserve.operator.forecast.quantile.QUANTILE` of the peak's
  calibrated upper bound (the point forecast times the factor that covered the peak that share of the
  validation windows), scaled like MASE: the loss the planner's decision has (an under-forecast costs a
  cold start, an over-forecast a prewarm), and the one ``auto`` selects by;
* calibration — the share of test windows whose actual peak was above the point forecast, and above the
  bound.

``auto`` here is, per model, the other forecaster with the lowest peak loss on the validation span among
those that forecast it as themselves, not as their fallback (all of them are run for it, whichever are
reported; a tie goes to the simplest, as in :meth:`Auto.candidates`); ``BacktestResult.chosen`` names
it.

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
from warmserve.operator.forecast.forecasters import (
    FORECASTERS,
    Auto,
    Forecaster,
    make_forecaster,
    one_blas_thread,
)
from warmserve.operator.forecast.quantile import calibrated_loss, calibration_factor, pinball
from warmserve.operator.forecast.traces import FloatArray
from warmserve.protocol.errors import InvalidFieldError

#: The share of the windows before the test span that is the validation span (the rest is train only).
VALIDATION_SHARE = 1 / 3


@dataclass(frozen=True)
class Scores:
    """Errors of one forecaster on one model (or overall)."""

    mean_mape: float
    peak_mape: float
    mean_mase: float
    peak_mase: float
    peak_exceeded: float  # calibration: % of test windows whose actual peak was above the forecast
    peak_loss: float  # scaled pinball loss of the calibrated peak bound over the test span
    bound_exceeded: float  # % of test windows whose actual peak was above the calibrated bound
    peak_factor: float  # the bound's factor, learned on the validation span


@dataclass(frozen=True)
class BacktestResult:
    """``models[model][forecaster]`` and ``overall[forecaster]``; ``train_windows[model]`` is where the test
    span starts and ``validation_windows[model]`` how many windows before it are the validation span.

    ``skipped[model]`` says why a model was not backtested; ``fallbacks[model][forecaster]`` why a
    forecaster's scores on that model are its fallback's (for part or all of the span forecast);
    ``chosen[model]`` is the forecaster ``auto`` used on it (when ``auto`` was run).
    """

    overall: Mapping[str, Scores]
    models: Mapping[str, Mapping[str, Scores]]
    train_windows: Mapping[str, int]
    validation_windows: Mapping[str, int]
    skipped: Mapping[str, str]
    fallbacks: Mapping[str, Mapping[str, str]]
    chosen: Mapping[str, str]


@dataclass(frozen=True)
class _Split:
    """Where a model's validation span (``validation``) and test span (``test``) start."""

    validation: int
    test: int


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


def naive_scale(training: FloatArray) -> float:
    """The mean absolute one-step change of ``training`` (NaN if it has none or it is 0): the scale that
    makes a model's errors comparable with another's."""
    steps = np.abs(np.diff(training))
    steps = steps[np.isfinite(steps)]
    return float(steps.mean()) if len(steps) and steps.mean() > 0 else math.nan


def mase(actual: FloatArray, predicted: FloatArray, training: FloatArray) -> float:
    """Mean absolute error scaled by the training part's mean absolute one-step change; NaN if undefined."""
    usable = np.isfinite(actual)
    if not usable.any():
        return math.nan
    return float(np.mean(np.abs(actual[usable] - predicted[usable])) / naive_scale(training))


def rolling_one_step(forecaster: Forecaster, series: FloatArray, train: int) -> FloatArray:
    """One-window-ahead forecasts of ``series[train:]``, refitting every ``forecaster.refit_days`` days (one
    causal pass when it has nothing to fit). Each fit reads a bounded trailing span and each block filters
    from that span's start, so the cost is linear in the windows."""
    if forecaster.refit_days is None:
        return forecaster.one_step(None, series, train) if train < len(series) else np.zeros(0)
    step = forecaster.refit_days * forecaster.period
    predictions = []
    for block in range(train, len(series), step):
        end = min(block + step, len(series))
        fitted = forecaster.fit(series[:block])
        predictions.append(forecaster.one_step(fitted, series[:end], block))
    return np.concatenate(predictions) if predictions else np.zeros(0)


def backtest(
    loads: Sequence[LoadSeries], names: Sequence[str], train_fraction: float = 0.5
) -> BacktestResult:
    """Backtest every forecaster in ``names`` on every series of ``loads`` with enough windows.

    ``InvalidFieldError`` if ``train_fraction`` is not a fraction, a name is unknown (both before any fit),
    or no model has windows for a training, a validation and a test part.
    """
    if not 0 < train_fraction < 1:
        raise InvalidFieldError("train_fraction", "a fraction strictly between 0 and 1", train_fraction)
    for name in names:
        make_forecaster(name, 1)
    models: dict[str, dict[str, Scores]] = {}
    splits: dict[str, _Split] = {}
    skipped: dict[str, str] = {}
    fallbacks: dict[str, dict[str, str]] = {}
    chosen: dict[str, str] = {}
    for load in loads:
        test = round(len(load.mean) * train_fraction)
        split = _Split(round(test * (1 - VALIDATION_SHARE)), test)
        if not 0 < split.validation < split.test < len(load.mean):
            skipped[load.model] = (
                f"{len(load.mean)} windows: too few for a training, a validation and a test part"
            )
            continue
        splits[load.model] = split
        with one_blas_thread():  # the fits' small matrices (see one_blas_thread)
            models[load.model], picked = _score_model(load, names, split)
        if picked is not None:
            chosen[load.model] = picked
        forecasters = [make_forecaster(name, load.windows_per_day) for name in names]
        fallbacks[load.model] = _fallbacks(forecasters, split.validation, len(load.mean))
    if not models:
        raise InvalidFieldError(
            "trace", "at least one model with windows for a training, a validation and a test part", skipped
        )
    overall = {name: _average([models[m][name] for m in models]) for name in names}
    return BacktestResult(
        overall,
        models,
        {model: split.test for model, split in splits.items()},
        {model: split.test - split.validation for model, split in splits.items()},
        skipped,
        fallbacks,
        chosen,
    )


def _score_model(
    load: LoadSeries, names: Sequence[str], split: _Split
) -> tuple[dict[str, Scores], str | None]:
    """Scores of ``names`` on one model, and ``auto``'s pick when ``auto`` is among them (it needs every
    other forecaster's forecasts, reported or not)."""
    wanted = [n for n in FORECASTERS if n != Auto.name] if Auto.name in names else list(names)
    forecasts = {
        name: _forecasts(make_forecaster(name, load.windows_per_day), load, split.validation)
        for name in wanted
    }
    scores = {name: _scores(load, split, *forecasts[name]) for name in names if name != Auto.name}
    if Auto.name not in names:
        return scores, None
    offset = split.test - split.validation
    actual = load.peak[split.validation : split.test]
    own = Auto(load.windows_per_day).candidates(split.validation)  # not as a fallback; the simplest first
    losses = {f.name: calibrated_loss(actual, forecasts[f.name][1][:offset]) for f in own}
    picked = min(losses, key=lambda name: losses[name] if math.isfinite(losses[name]) else math.inf)
    scores[Auto.name] = _scores(load, split, *forecasts[picked])
    return {name: scores[name] for name in names}, picked


def _forecasts(forecaster: Forecaster, load: LoadSeries, start: int) -> tuple[FloatArray, FloatArray]:
    """Rolling forecasts of the mean and the peak from window ``start`` on."""
    return rolling_one_step(forecaster, load.mean, start), rolling_one_step(forecaster, load.peak, start)


def _fallbacks(forecasters: Sequence[Forecaster], start: int, windows: int) -> dict[str, str]:
    """Why each forecaster that had too little history when forecasting began (at window ``start``) was
    scored (in part) as its fallback."""
    short = {}
    for f in forecasters:
        if f.min_history > start:
            share = "all" if f.min_history >= windows else f"the first {f.min_history - start}"
            short[f.name] = (
                f"needs {f.min_history} windows of history, had {start}: "
                f"its fallback forecast {share} of the {windows - start} validation and test windows"
            )
    return short


def _scores(load: LoadSeries, split: _Split, mean: FloatArray, peak: FloatArray) -> Scores:
    """Test-span scores of forecasts made from the validation span's start on; the peak bound's factor is
    learned on the validation span."""
    offset = split.test - split.validation
    factor = calibration_factor(load.peak[split.validation : split.test], peak[:offset])
    actual_mean, actual_peak = load.mean[split.test :], load.peak[split.test :]
    mean, peak = mean[offset:], peak[offset:]
    before = load.peak[: split.test]
    return Scores(
        mape(actual_mean, mean),
        mape(actual_peak, peak),
        mase(actual_mean, mean, load.mean[: split.test]),
        mase(actual_peak, peak, before),
        exceeded(actual_peak, peak),
        pinball(actual_peak, factor * peak) / naive_scale(before),
        exceeded(actual_peak, factor * peak),
        factor,
    )


def _average(scores: Sequence[Scores]) -> Scores:
    def mean_of(values: list[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.nan

    return Scores(*(mean_of([getattr(s, field) for s in scores]) for field in Scores.__dataclass_fields__))
