"""The loss the planner's peak forecast is judged by, and the calibration that turns a point forecast of the
peak into an upper bound.

The planner provisions for a window's peak, and the two errors cost differently: an under-forecast costs a
cold start, an over-forecast a prewarm that may be evicted for free. So a peak forecast is scored as an upper
bound at quantile ``q`` (:data:`QUANTILE`): the pinball (quantile) loss charges an under-forecast ``q`` per
unit and an over-forecast ``1 - q``, and is lowest for the forecast the actual peak stays under ``q`` of the
time. A point forecast is turned into such a bound by a factor learned on a validation span
(:func:`calibration_factor`), which is what :mod:`~warmserve.operator.forecast.backtest` scores and what
``auto`` selects by (docs/forecasting.md, section 4).
"""

from __future__ import annotations

import math

import numpy as np

from warmserve.operator.forecast.series import FloatArray

#: The share of windows whose actual peak a calibrated bound should cover.
QUANTILE = 0.9


def pinball(actual: FloatArray, bound: FloatArray, q: float = QUANTILE) -> float:
    """Mean pinball loss of ``bound`` as the ``q``-quantile of ``actual`` over windows with a finite actual:
    ``q·(a − b)`` when under (a > b), ``(1 − q)·(b − a)`` when over; NaN if no window has a finite actual."""
    usable = np.isfinite(actual)
    if not usable.any():
        return math.nan
    miss = actual[usable] - bound[usable]
    return float(np.mean(np.maximum(q * miss, (q - 1.0) * miss)))


def calibration_factor(actual: FloatArray, forecast: FloatArray, q: float = QUANTILE) -> float:
    """The factor ``c`` such that ``c × forecast`` is above ``actual`` in a share ``q`` of the windows with a
    finite actual and a positive forecast (the ``q``-quantile of actual / forecast; a forecast so small the
    ratio overflows is left out); 1 when there is no such window, since a zero forecast cannot be scaled and
    there is nothing to learn from."""
    usable = np.isfinite(actual) & np.isfinite(forecast) & (forecast > 0)
    with np.errstate(over="ignore"):  # a vanishing forecast gives an infinite ratio, left out below
        ratios = actual[usable] / forecast[usable]
    ratios = ratios[np.isfinite(ratios)]
    return float(np.quantile(ratios, q)) if len(ratios) else 1.0


def calibrated_loss(actual: FloatArray, forecast: FloatArray, q: float = QUANTILE) -> float:
    """:func:`pinball` of ``forecast`` calibrated on the same windows: how good an upper bound the forecast
    makes once scaled, the figure candidates are compared by on a validation span."""
    return pinball(actual, calibration_factor(actual, forecast, q) * forecast, q)
