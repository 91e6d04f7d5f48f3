"""The next window's load per model, from the forecaster that did best on that model's backtest.

A user planning capacity wants the forecast itself, not only how past forecasts scored: for each model
this fits the chosen forecaster on the model's whole history and forecasts the window after it. The choice
is the forecaster with the lowest peak loss on the model's backtest (the planner provisions for the peak;
the test span is in the past of the window forecast, so choosing on it peeks at nothing), then the lowest
peak MASE, then peak MAPE; its peak times the factor calibrated in the backtest is the upper bound
(``peak_bound``). A model the backtest skipped for too little history borrows the daily shape of the
others (:mod:`~warmserve.operator.forecast.pooled`) when some have a full day; one with no score otherwise
gets the last value (both with a factor of 1) and says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from warmserve.operator.forecast.backtest import BacktestResult, Scores
from warmserve.operator.forecast.concurrency import LoadSeries
from warmserve.operator.forecast.forecasters import LastValue, fit_load, forecast, make_forecaster
from warmserve.operator.forecast.pooled import borrowed, daily_shape
from warmserve.operator.forecast.series import FloatArray

#: The name the next-window table gives a forecast borrowed from the pooled daily shape.
POOLED = "pooled-shape"


@dataclass(frozen=True)
class Outlook:
    """One model's forecast of the window starting at ``start_sec`` (concurrency: requests in flight)."""

    model: str
    start_sec: float
    forecaster: str
    mean: float
    peak: float
    peak_bound: float  # the peak times the forecaster's calibration factor on this model
    why: str  # why this forecaster


def choose(scores: Mapping[str, Scores]) -> tuple[str, str] | None:
    """The forecaster with the lowest finite peak loss, else peak MASE, else peak MAPE, with the reason;
    ``None`` if none of them has a finite peak score."""
    for metric, label in (("peak_loss", "peak loss"), ("peak_mase", "peak MASE"), ("peak_mape", "peak MAPE")):
        finite = {name: getattr(s, metric) for name, s in scores.items() if math.isfinite(getattr(s, metric))}
        if finite:
            return min(finite, key=lambda name: finite[name]), f"lowest backtest {label}"
    return None


def outlooks(loads: Sequence[LoadSeries], result: BacktestResult) -> list[Outlook]:
    """The next window of every series in ``loads``."""
    shape = daily_shape(loads, loads[0].window_sec) if loads else None
    return [_outlook(load, result, shape) for load in loads]


def _outlook(load: LoadSeries, result: BacktestResult, shape: tuple[FloatArray, int] | None) -> Outlook:
    scores = result.models.get(load.model, {})
    picked = choose(scores)
    start = load.start_sec + len(load.mean) * load.window_sec
    if picked is None and load.model in result.skipped and shape is not None:
        mean, peak = borrowed(load, shape[0])
        why = f"its level times the daily shape of {shape[1]} models ({result.skipped[load.model]})"
        return Outlook(load.model, start, POOLED, mean, peak, peak, why)
    if picked is None:
        reason = result.skipped.get(load.model, "no forecaster had a finite backtest score")
        picked = (LastValue.name, f"last value ({reason})")
    name, why = picked
    factor = scores[name].peak_factor if name in scores else 1.0
    fitted = fit_load(make_forecaster(name, load.windows_per_day), load.mean, load.peak)
    ahead = forecast(fitted, load.mean, load.peak, 1)
    return Outlook(load.model, start, name, ahead.mean[0], ahead.peak[0], factor * ahead.peak[0], why)
