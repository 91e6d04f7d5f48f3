"""Forecasters of a per-window load series, behind one small interface and a name → class registry.

Each forecaster works on one series (a model's window means, or its window peaks) sampled once per window,
with a daily period of ``period`` windows. The work is split so the online path stays cheap:

* :meth:`Forecaster.fit` — the expensive part (parameter estimation), run now and then (daily, say);
  returns an immutable fit.
* :meth:`Forecaster.predict` — pure and cheap: the next ``horizon`` windows after ``history`` using a fit
  made on an earlier prefix of the same ``history`` (same first window). Run every window.
* :meth:`Forecaster.one_step` — the one-window-ahead predictions a backtest needs, for every window from
  ``start`` on, each using only the windows before it (vectorised where the model allows).

Missing data never crashes and never yields a negative or NaN forecast: NaN windows in the history are gaps
(``ets`` and ``stl-arima`` see them filled with the last observed value, 0 before any); with no usable
history a forecaster predicts the last observed value, or 0 for a brand-new model; an ``ets`` or
``stl-arima`` model that cannot be fitted (too little history, see each class) uses the WarmServe
forecaster; every
output is finally clipped to ``[0, ∞)`` with non-finite values replaced by the last observed value.

The scheduler's call is :func:`fit_load` once in a while, then :func:`forecast` every window.

pandas and statsmodels are imported by the functions that use them, on first use: this module's names are
read wherever a ``ModelDeployment`` is parsed (its ``spec.forecast.forecaster``), and importing them up
front cost every process of the ``warmserve`` command, each worker and gateway Pod included, about 150 MB
and seconds of CPU at start (docs/operator.md, "Floors").
"""

from __future__ import annotations

import functools
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from warmserve.operator.forecast.arma import hannan_rissanen_11
from warmserve.operator.forecast.quantile import calibrated_loss
from warmserve.protocol.errors import InvalidFieldError

if TYPE_CHECKING:  # the trace readers import pandas (see the module docstring)
    from warmserve.operator.forecast.traces import FloatArray

#: The paper's correction uses the last ≤ 10 residuals with weights 2^-d (d = 1 for the latest).
RESIDUALS = 10
IntArray = npt.NDArray[np.int_]
_WEIGHTS = 2.0 ** -np.arange(1, RESIDUALS + 1)


class Forecaster(ABC):
    """Forecasts one series with a daily period of ``period`` windows (≥ 1)."""

    name: ClassVar[str]
    #: Days of history it needs to forecast as itself rather than through its fallback.
    history_days: ClassVar[int] = 0
    #: Trailing days of history a fit reads (``None``: all of it): a refit then costs the same however long
    #: the history has grown, and a rolling forecast stays linear in the windows.
    fit_days: ClassVar[int | None] = None
    #: How often (days) :func:`~warmserve.operator.forecast.backtest.rolling_one_step` refits it; between
    #: refits the fit's parameters filter the new windows. ``None``: it has nothing to fit, one causal pass.
    refit_days: ClassVar[int | None] = None

    def __init__(self, period: int) -> None:
        if period < 1:
            raise InvalidFieldError("period", "at least one window per day", period)
        self.period = period

    @property
    def min_history(self) -> int:
        """Windows of history it needs to forecast as itself (at least one)."""
        return max(1, self.history_days * self.period)

    def fit_start(self, history: FloatArray) -> int:
        """The first window of ``history`` a fit reads (see :attr:`fit_days`)."""
        return 0 if self.fit_days is None else max(0, len(history) - self.fit_days * self.period)

    def fit(self, history: FloatArray) -> Any:
        """Estimate parameters from ``history``; the default has none. Never raises on short or gappy data."""
        return None

    def refit(self, previous: Any, history: FloatArray) -> Any:
        """A fit on ``history`` given the ``previous`` fit of the same series (on an earlier history): a
        forecaster may reuse what is slow to find and still right (``auto`` its choice); the default fits
        afresh."""
        return self.fit(history)

    def predict(self, fitted: Any, history: FloatArray, horizon: int) -> FloatArray:
        """The ``horizon`` windows after ``history``: finite and ≥ 0."""
        if horizon < 1:
            raise InvalidFieldError("horizon", "at least one window", horizon)
        return _sanitize(self._predict(fitted, history, horizon), history)

    def one_step(self, fitted: Any, history: FloatArray, start: int) -> FloatArray:
        """For each window i ≥ ``start``, the forecast of ``history[i]`` from ``history[:i]`` and ``fitted``
        (a fit on ``history[:start]`` or earlier): finite and ≥ 0."""
        return np.array([self.predict(fitted, history[:i], 1)[0] for i in range(start, len(history))])

    @abstractmethod
    def _predict(self, fitted: Any, history: FloatArray, horizon: int) -> FloatArray:
        """Raw forecast; :meth:`predict` cleans it."""


def last_value(history: FloatArray) -> float:
    """The last finite value of ``history``, 0 when there is none (a new model)."""
    finite = history[np.isfinite(history)]
    return float(finite[-1]) if len(finite) else 0.0


def _sanitize(values: FloatArray, history: FloatArray) -> FloatArray:
    cleaned = np.where(np.isfinite(values), values, last_value(history))
    return np.maximum(cleaned, 0.0).astype(np.float64)


def _fill_gaps(history: FloatArray, first: int = 0) -> FloatArray:
    """``history[first:]`` with NaN windows taking the last observed value (that before ``first`` included;
    0 before any), so statsmodels sees a gapless series."""
    return _forward_fill(history[first:], last_value(history[:first]))


def _forward_fill(values: FloatArray, before: float) -> FloatArray:
    """``values`` with each NaN taking the last non-NaN value before it, ``before`` where there is none
    (pandas' ``ffill().fillna(before)`` in numpy: a pandas Series costs ~0.1 ms to build, a few a fit)."""
    values = np.asarray(values, dtype=np.float64)
    known = np.where(np.isnan(values), -1, np.arange(len(values)))
    latest = np.maximum.accumulate(known) if len(values) else known
    return np.where(latest >= 0, values[np.maximum(latest, 0)], before)


class LastValue(Forecaster):
    """Baseline: the next windows equal the last observed one."""

    name = "last-value"

    def _predict(self, fitted: Any, history: FloatArray, horizon: int) -> FloatArray:
        return np.full(horizon, last_value(history))

    def one_step(self, fitted: Any, history: FloatArray, start: int) -> FloatArray:
        """:meth:`predict` one window ahead at every window from ``start``, in one pass."""
        return np.maximum(_last_values_before(history)[start:], 0.0)


class SeasonalNaive(Forecaster):
    """Baseline: a window equals the same window ``history_days`` days earlier (else the last value)."""

    def _predict(self, fitted: Any, history: FloatArray, horizon: int) -> FloatArray:
        lag = self.min_history
        targets = len(history) + np.arange(horizon)
        source = targets - lag * np.ceil((targets - len(history) + 1) / lag).astype(int)
        known = source >= 0
        values = np.full(horizon, np.nan)
        values[known] = history[source[known]]
        return np.where(np.isfinite(values), values, last_value(history))

    def one_step(self, fitted: Any, history: FloatArray, start: int) -> FloatArray:
        lag = self.min_history
        lagged = np.concatenate([np.full(lag, np.nan), history])[start : len(history)]
        fallback = _last_values_before(history)[start:]
        return _sanitize(np.where(np.isfinite(lagged), lagged, fallback), history[:start])


class SeasonalNaiveDay(SeasonalNaive):
    name = "seasonal-naive-1d"
    history_days = 1


class SeasonalNaiveWeek(SeasonalNaive):
    name = "seasonal-naive-7d"
    history_days = 7


class WarmServeForecaster(Forecaster):
    """The paper's forecaster: the mean of the same window on all previous days, plus the weighted mean
    (weights 2^-d) of the residuals of the last ≤ 10 windows against that same seasonal mean.

    Before a full day of history (or for a window never seen at that time of day) the seasonal mean is the
    last observed value; windows without a seasonal mean contribute no residual.
    """

    name = "warmserve"
    history_days = 1

    def _predict(self, fitted: Any, history: FloatArray, horizon: int) -> FloatArray:
        targets = len(history) + np.arange(horizon)
        recent = np.arange(max(0, len(history) - RESIDUALS), len(history))[::-1]
        residuals = history[recent] - self._seasonal_mean(history, recent)
        usable = np.isfinite(residuals)
        weights = _WEIGHTS[: len(recent)][usable]
        correction = float(weights @ residuals[usable] / weights.sum()) if usable.any() else 0.0
        base = self._seasonal_mean(history, targets)
        return np.where(np.isfinite(base), base, last_value(history)) + correction

    def one_step(self, fitted: Any, history: FloatArray, start: int) -> FloatArray:
        """:meth:`predict` one window ahead at every window from ``start``, in one pass (linear in the
        windows, where a call per window re-reads every previous day): a window's seasonal mean is the
        running mean of the finite values at its phase before it, the same whichever later window asks."""
        n = len(history)
        seasonal = _running_phase_mean(history, self.period)
        residuals = history - seasonal
        total, weight = np.zeros(n + 1), np.zeros(n + 1)
        for d, w in enumerate(_WEIGHTS[:n], start=1):  # window i's correction: residuals at i-1 ... i-10
            usable = np.isfinite(residuals[: n + 1 - d])
            total[d:] += np.where(usable, w * np.nan_to_num(residuals[: n + 1 - d]), 0.0)
            weight[d:] += np.where(usable, w, 0.0)
        correction = np.divide(total, weight, out=np.zeros(n + 1), where=weight > 0)[start:n]
        before = _last_values_before(history)[start:n]
        base = seasonal[start:n]
        raw = np.where(np.isfinite(base), base, before) + correction
        return np.maximum(np.where(np.isfinite(raw), raw, before), 0.0)

    def _seasonal_mean(self, history: FloatArray, targets: IntArray) -> FloatArray:
        """For each target window, the mean of the finite values at the same phase before min(target, n)."""
        means = np.full(len(targets), np.nan)
        for k, target in enumerate(targets):
            phase = target % self.period
            past = history[phase : min(int(target), len(history)) : self.period]
            past = past[np.isfinite(past)]
            if len(past):
                means[k] = past.mean()
        return means


def _running_phase_mean(history: FloatArray, period: int) -> FloatArray:
    """For each window, the mean of the finite values at the same phase (index mod ``period``) before it;
    NaN where there is none."""
    n = len(history)
    days = -(-n // period)
    flat = np.full(days * period, np.nan)
    flat[:n] = history
    grid = flat.reshape(days, period)
    finite = np.isfinite(grid)
    sums = np.cumsum(np.where(finite, grid, 0.0), axis=0) - np.where(finite, grid, 0.0)
    counts = np.cumsum(finite, axis=0) - finite
    means = np.divide(sums, counts, out=np.full(grid.shape, np.nan), where=counts > 0)
    return np.asarray(means.reshape(-1)[:n], dtype=np.float64)


def _last_values_before(history: FloatArray) -> FloatArray:
    """For each window i, :func:`last_value` of ``history[:i]`` (0 before any finite value)."""
    filled = _forward_fill(history, 0.0)
    return np.concatenate([[0.0], filled[:-1]]) if len(history) else np.zeros(0)


#: The fewest windows ``ets`` fits (simple exponential smoothing) on.
_ETS_MIN_WINDOWS = 10


@dataclass(frozen=True)
class EtsFit:
    """A fitted additive ETS model without trend: the window its initial states belong to, its season length
    (``None``: no season), smoothing weights and initial states."""

    first: int
    seasonal_periods: int | None
    smoothing_level: float
    smoothing_seasonal: float | None
    initial_level: float
    initial_seasons: tuple[float, ...]


class Ets(Forecaster):
    """Exponential smoothing (statsmodels' additive Holt-Winters without trend, fitted in numpy): at each
    fit, on the last :attr:`fit_days` days, the lower-AIC of no season and a daily additive season (≥ 2 days
    of history). A season that does not pay for its parameters is left out, so on a noisy series this is
    simple exponential smoothing.

    Predicting re-runs the filter from the fit's initial states (at the start of its span) with the weights
    fixed, which costs a fraction of a millisecond. Under 10 windows of history, or if no model can
    be fitted, it behaves as the WarmServe forecaster.
    """

    name = "ets"
    fit_days = 7
    refit_days = 14  # a fit (two candidate models) costs ~4 ms; the filter tracks level and season between

    @property
    def min_history(self) -> int:
        """Windows it needs to fit as itself (a daily season needs two days more)."""
        return _ETS_MIN_WINDOWS

    def fit(self, history: FloatArray) -> EtsFit | None:
        first = self.fit_start(history)
        span = len(history) - first
        if span < _ETS_MIN_WINDOWS:
            return None
        filled = _fill_gaps(history, first)
        if not np.isfinite(filled).all():  # an infinite window: no model fits it
            return None
        seasonal = self.period >= 2 and span >= 2 * self.period
        candidates = (_fit_level(filled, first), self._fit_seasonal(filled, first) if seasonal else None)
        fits = [f for f in candidates if f is not None]
        return min(fits, key=lambda fit: fit[0])[1] if fits else None

    def _fit_seasonal(self, filled: FloatArray, first: int) -> tuple[float, EtsFit] | None:
        """(AIC, fit) of the daily additive season on ``filled`` (the history from window ``first`` on, gaps
        filled): the initial states by statsmodels' heuristic (:func:`_heuristic_states`),
        then the level and season weights of least squared one-step error, the AIC as statsmodels computes
        it (n log(SSE / n) + 2 (period + 2)); ``None`` when the heuristic cannot run or the AIC is not
        finite (a constant series fitted exactly), as statsmodels' fit is then refused.

        What ``ExponentialSmoothing(seasonal="add", initialization_method="heuristic").fit()`` estimates,
        a few times cheaper: each trial of the weights is :func:`_holt_winters` (a filter pass a day),
        searched by L-BFGS-B over the level weight a and the season's share g of 1 - a (statsmodels'
        bounds: 0 ≤ a ≤ 1, 0 ≤ season weight ≤ 1 - a), where statsmodels' own fit spent most of its time
        setting up and re-running a Python loop over the windows (docs/forecasting.md, "Refit cost")."""
        from scipy.optimize import minimize

        states = _heuristic_states(filled, self.period)
        if states is None:
            return None
        level, seasons = states

        def fit_of(weights: FloatArray) -> EtsFit:
            alpha = float(weights[0])
            return EtsFit(first, self.period, alpha, float(weights[1]) * (1 - alpha), level, seasons)

        def sse(weights: FloatArray) -> float:
            errors = filled - _holt_winters(filled, fit_of(weights)).one_step
            return float(errors @ errors)

        start = min(_SEASONAL_STARTS, key=sse)
        n = len(filled)
        scale = sse(start) / n or 1.0  # the start's mean squared error: the search stops alike at any scale
        best = minimize(
            lambda weights: sse(weights) / scale, start, method="L-BFGS-B", bounds=[(0.0, 1.0)] * 2
        )
        with np.errstate(divide="ignore"):
            aic = float(n * np.log(best.fun * scale / n) + 2.0 * (self.period + 2))
        return (aic, fit_of(best.x)) if math.isfinite(aic) else None

    def _predict(self, fitted: EtsFit | None, history: FloatArray, horizon: int) -> FloatArray:
        if fitted is None:
            return WarmServeForecaster(self.period).predict(None, history, horizon)
        filtered = _holt_winters(_fill_gaps(history, fitted.first), fitted)
        if fitted.seasonal_periods is None:
            return np.full(horizon, filtered.level)
        return filtered.level + filtered.seasons[np.arange(horizon) % fitted.seasonal_periods]

    def one_step(self, fitted: EtsFit | None, history: FloatArray, start: int) -> FloatArray:
        if fitted is None:
            return WarmServeForecaster(self.period).one_step(None, history, start)
        filtered = _holt_winters(_fill_gaps(history, fitted.first), fitted)
        return _sanitize(filtered.one_step[start - fitted.first :], history[:start])


def _heuristic_states(filled: FloatArray, period: int) -> tuple[float, tuple[float, ...]] | None:
    """The initial level and seasons of statsmodels' ``initialization_method="heuristic"`` (``None`` where it
    refuses: under two periods, or too few windows for ten seasonally adjusted ones), in numpy: the first
    few periods' centred moving average (2 x period when the period is even) is the trend; the seasons are
    the mean of the detrended values at each phase, centred; the level is the intercept of a line through
    the first ten trend values."""
    min_windows = 10 + 2 * (period // 2)
    if len(filled) < max(2 * period, min_windows):
        return None
    cycles = max(min(5, len(filled) // period), -(-min_windows // period))
    values = filled[: cycles * period]
    sums = np.concatenate([[0.0], np.cumsum(values)])
    trend = np.full(len(values), np.nan)
    trend[period // 2 : period // 2 + len(values) - period + 1] = (sums[period:] - sums[:-period]) / period
    if period % 2 == 0:
        trend = np.concatenate([(trend[:-1] + trend[1:]) / 2, [np.nan]])
    detrended = np.full(cycles * period, np.nan)
    detrended[: len(values)] = values - trend
    seasons = np.nanmean(detrended.reshape(cycles, period), axis=0)
    line = np.column_stack([np.ones(10), np.arange(1.0, 11.0)])
    level = float((np.linalg.pinv(line) @ trend[np.isfinite(trend)][:10])[0])
    return level, tuple(float(v) for v in seasons - seasons.mean())


#: Where :meth:`Ets._fit_seasonal`'s search may start (level weight, the season's share of the rest): from
#: the best of these, so a slow level or a fast one is not missed for a local minimum near the other.
_SEASONAL_STARTS = (np.array([0.5, 0.1]), np.array([0.05, 0.05]), np.array([0.95, 0.5]))


#: Smoothing weights :func:`_fit_level` tries before refining the best (statsmodels' brute-force start).
_LEVEL_GRID = np.linspace(0.0, 1.0, 11)


def _fit_level(filled: FloatArray, first: int) -> tuple[float, EtsFit] | None:
    """(AIC, fit) of simple exponential smoothing on ``filled`` (the history from window ``first`` on, gaps
    filled): the smoothing weight and initial level of least squared one-step error, the AIC as statsmodels
    computes it (n log(SSE / n) + 2 x 2 parameters); ``None`` when it is not finite (a constant series
    fitted exactly), as statsmodels' fit is then refused.

    What ``ExponentialSmoothing(initialization_method="estimated").fit()`` estimates, a few times cheaper:
    the errors are affine in the initial level, so for a weight the best level is a least-squares formula
    and the search is over the weight alone (a grid, then Brent's method around its best point), each
    trial one ``scipy.signal.lfilter`` pass (docs/forecasting.md, "Refit cost")."""
    from scipy.optimize import minimize_scalar

    trials = np.array([_level_sse(filled, alpha)[0] for alpha in _LEVEL_GRID])
    best = int(np.argmin(trials))
    low, high = _LEVEL_GRID[max(best - 1, 0)], _LEVEL_GRID[min(best + 1, len(_LEVEL_GRID) - 1)]
    refined = minimize_scalar(
        lambda a: _level_sse(filled, a)[0], bounds=(low, high), method="bounded", options={"xatol": 1e-3}
    )
    alpha = float(refined.x) if refined.fun < trials[best] else float(_LEVEL_GRID[best])
    sse, level = _level_sse(filled, alpha)
    n = len(filled)
    with np.errstate(divide="ignore"):
        aic = float(n * np.log(sse / n) + 4.0)
    usable = math.isfinite(aic) and math.isfinite(level)
    return (aic, EtsFit(first, None, alpha, None, level, ())) if usable else None


def _level_sse(filled: FloatArray, alpha: float) -> tuple[float, float]:
    """The least squared one-step error of simple exponential smoothing with weight ``alpha`` over
    ``filled``, and the initial level giving it: the forecast of window t is the level started at 0 plus
    q^t times the initial level (q = 1 - alpha). The sums over q^t are a filter pass and a closed form, not
    powers (powers of a small q fall into subnormal numbers, slow to compute with)."""
    from scipy.signal import lfilter

    n, q = len(filled), 1.0 - alpha
    levels = lfilter([alpha], [1.0, -q], filled)
    residuals = filled - np.concatenate([[0.0], levels[:-1]])
    weighted = float(lfilter([1.0], [1.0, -q], residuals[::-1])[-1])  # sum of residual_t q^t
    norm = float(n) if q == 1.0 else (1.0 - q ** (2 * n)) / (1.0 - q * q)  # sum of q^2t
    level = weighted / norm
    return max(float(residuals @ residuals) - level * weighted, 0.0), level


@dataclass(frozen=True)
class _Filtered:
    """A Holt-Winters filter run: each window's forecast from the windows before it, and the level and the
    last season's values after the last window."""

    one_step: FloatArray
    level: float
    seasons: FloatArray


def _holt_winters(values: FloatArray, fitted: EtsFit) -> _Filtered:
    """statsmodels' additive Holt-Winters recursion without trend (``ExponentialSmoothing._predict``) over
    ``values`` from the fit's initial states, with its weights. A season's values are updated from the
    previous season's, so a whole season of windows at a time is one first-order filter of the level
    (``scipy.signal.lfilter``) and vector arithmetic: microseconds where statsmodels' Python loop, and its
    model's set-up, took milliseconds a call."""
    from scipy.signal import lfilter

    n, alpha = len(values), fitted.smoothing_level
    m = fitted.seasonal_periods or 0
    gamma = fitted.smoothing_seasonal or 0.0
    levels = np.empty(n + 1)
    levels[0] = fitted.initial_level
    seasons = np.zeros(n + m)
    seasons[:m] = fitted.initial_seasons
    for first in range(0, n, m or max(n, 1)):
        last = min(first + (m or n), n)
        step = alpha * (values[first:last] - seasons[first:last])  # l_i = a (y - s_i-m) + (1 - a) l_i-1
        levels[first + 1 : last + 1] = lfilter(
            [1.0], [1.0, alpha - 1.0], step, zi=[(1 - alpha) * levels[first]]
        )[0]
        if m:
            deseasoned = values[first:last] - levels[first:last]
            seasons[first + m : last + m] = gamma * deseasoned + (1 - gamma) * seasons[first:last]
    return _Filtered(levels[:n] + seasons[:n], float(levels[n]), seasons[n : n + m])


@dataclass(frozen=True)
class StlArimaFit:
    """The first window of the fit's span, STL's seasonal component over the span, and the ARMA(1,1) fitted
    to the deseasonalised span: its mean (``level``) and its AR and MA coefficients."""

    first: int
    seasonal: FloatArray
    level: float
    ar: float
    ma: float


class StlArima(Forecaster):
    """statsmodels STL (daily period) + ARIMA(1,0,1) with a constant on the seasonally adjusted series, both
    fitted on the last :attr:`fit_days` days.

    The fit is kept cheap (docs/forecasting.md, "Refit cost"): STL's LOESS runs every few points and one
    inner pass (no robustness weights, so the second pass changed little); the constant is the adjusted
    series' mean and the ARMA part Hannan-Rissanen's estimate on the demeaned series, statsmodels' own
    vectorised (:mod:`~warmserve.operator.forecast.arma`; refused, as ``ARIMA.fit`` refuses them, when not
    stationary or not invertible).

    Windows after the fit get the last fitted day of the seasonal component (seasonal naive). Forecasting
    runs the ARMA's one-window recursion with the fitted coefficients over the adjusted series from the
    span's start (``scipy.signal.lfilter``: microseconds, where a statsmodels Kalman filter took
    milliseconds of set-up a call): its residuals are the conditional ones, which the Kalman filter's equal
    once the start has worn off (the MA coefficient is below 1 in size). Under two days of history, or if a
    fit fails, it behaves as the WarmServe forecaster.
    """

    name = "stl-arima"
    history_days = 2
    fit_days = 7
    refit_days = 14  # a fit costs ~4 ms; the recursion tracks the level in between

    def fit(self, history: FloatArray) -> StlArimaFit | None:
        if self.period < 2 or len(history) < self.min_history:
            return None
        from statsmodels.tsa.seasonal import STL

        first = self.fit_start(history)
        filled = _fill_gaps(history, first)
        if not np.isfinite(filled).all():  # an infinite window: no model fits it
            return None
        jump = self.period // 12 + 1  # LOESS every `jump` points: same fit, ~10x faster
        smooth_jump = self.period // 6 + 1  # the trend's and low-pass' windows span days: ~2x faster again
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                stl = STL(
                    filled,
                    period=self.period,
                    seasonal_jump=jump,
                    trend_jump=smooth_jump,
                    low_pass_jump=smooth_jump,
                )
                seasonal = np.asarray(stl.fit(inner_iter=1).seasonal, dtype=float)
                adjusted = filled - seasonal
                level = float(adjusted.mean())
                ar, ma = hannan_rissanen_11(adjusted - level)
            except (ValueError, np.linalg.LinAlgError):
                return None
        if not (abs(ar) < 1 and abs(ma) < 1):  # not stationary or not invertible: ARIMA.fit refuses them
            return None
        return StlArimaFit(first, seasonal, level, ar, ma)

    def _seasonal(self, fitted: StlArimaFit, indices: IntArray) -> FloatArray:
        """The seasonal component at ``indices`` (windows of the history, not of the fit's span)."""
        fitted_len = len(fitted.seasonal)
        last_day = fitted.seasonal[fitted_len - self.period :]
        relative = np.asarray(indices, dtype=int) - fitted.first
        ahead = relative - fitted_len
        inside = fitted.seasonal[np.clip(relative, 0, fitted_len - 1)]
        seasonal: FloatArray = np.where(ahead < 0, inside, last_day[ahead % self.period])
        return seasonal

    def _next(self, fitted: StlArimaFit, history: FloatArray) -> FloatArray:
        """For each window from the fit's first to one past the end of ``history``, the ARMA's forecast of
        the demeaned adjusted series from the windows before it (0, the mean, at the first)."""
        from scipy.signal import lfilter

        demeaned = _fill_gaps(history, fitted.first) - fitted.level
        demeaned -= self._seasonal(fitted, np.arange(fitted.first, len(history)))
        residuals = lfilter([1.0, -fitted.ar], [1.0, fitted.ma], demeaned)  # e_t = z_t - ar z_t-1 - ma e_t-1
        ahead = fitted.ar * demeaned + fitted.ma * np.asarray(residuals, dtype=float)
        return np.concatenate([[0.0], ahead])

    def _predict(self, fitted: StlArimaFit | None, history: FloatArray, horizon: int) -> FloatArray:
        if fitted is None:
            return WarmServeForecaster(self.period).predict(None, history, horizon)
        targets = len(history) + np.arange(horizon)
        demeaned = self._next(fitted, history)[-1] * fitted.ar ** np.arange(horizon)
        return np.asarray(fitted.level + demeaned + self._seasonal(fitted, targets), dtype=float)

    def one_step(self, fitted: StlArimaFit | None, history: FloatArray, start: int) -> FloatArray:
        if fitted is None:
            return WarmServeForecaster(self.period).one_step(None, history, start)
        if start >= len(history):
            return np.zeros(0)
        targets = np.arange(start, len(history))
        demeaned = self._next(fitted, history)[start - fitted.first : len(history) - fitted.first]
        return _sanitize(fitted.level + demeaned + self._seasonal(fitted, targets), history[:start])


@dataclass(frozen=True)
class AutoFit:
    """The candidate ``auto`` chose, that candidate's own fit, and how many refits ago the choice was made
    (0: at this fit; ``None``: no comparison was made, too little history)."""

    chosen: str
    fit: Any
    refits_since_selection: int | None = 0


class Auto(Forecaster):
    """Picks the candidate whose one-window-ahead forecasts over the last ``evaluation_days`` days of the
    history (at most half of it; each candidate fitted once on the history before that stretch) make the
    best upper bound: the lowest pinball loss at ``QUANTILE`` once scaled by a factor calibrated on that
    stretch (:func:`~warmserve.operator.forecast.quantile.calibrated_loss`), the loss the peak is judged by.
    It keeps that candidate's fit, made on the history before the stretch: fitting it again on the whole
    history would double the comparison's heaviest fit for a fit a few days fresher, and the next refit, a
    day later, fits it on the whole history anyway (``ets`` and ``stl-arima`` alone forecast from fits up to
    two weeks old). Only candidates that can run as themselves on the shorter history take part, so a
    fallback never wins in another's name.

    The comparison fits every candidate, so it is redone every ``selection_days`` only: the refits between
    (every :attr:`refit_days`, :meth:`refit`) fit the chosen candidate alone on the history
    (docs/forecasting.md, "Refit cost"). Only data before the fit is used, so a backtest of ``auto`` does not
    peek. With at most one day of history there is nothing to compare and it uses the WarmServe forecaster
    (compared again at the next refit).
    """

    name = "auto"
    evaluation_days: ClassVar[int] = 3
    refit_days = 1
    selection_days: ClassVar[int] = 7

    def candidates(self, history_windows: int) -> tuple[Forecaster, ...]:
        """Every other forecaster that can run as itself (not its fallback) on that much history, the simplest
        first: a tie (a stretch with nothing to tell them apart, e.g. a model idle throughout) goes to the
        simplest, since a richer model's fit then rests on nothing."""
        every = (FORECASTERS[name](self.period) for name in _SIMPLEST_FIRST)
        return tuple(f for f in every if f.min_history <= history_windows)

    def fit(self, history: FloatArray) -> AutoFit:
        if len(history) <= self.period:
            return AutoFit(WarmServeForecaster.name, None, None)
        split = len(history) - min(self.evaluation_days * self.period, len(history) // 2)
        actual = history[split:]
        errors: dict[str, float] = {}
        fits: dict[str, Any] = {}
        for candidate in self.candidates(split):
            fits[candidate.name] = candidate.fit(history[:split])
            loss = calibrated_loss(actual, candidate.one_step(fits[candidate.name], history, split))
            errors[candidate.name] = loss if math.isfinite(loss) else math.inf
        chosen = min(errors, key=lambda name: errors[name])
        return AutoFit(chosen, fits[chosen])

    def refit(self, previous: AutoFit | None, history: FloatArray) -> AutoFit:
        """The previous choice fitted on ``history`` while it is younger than ``selection_days``, a fresh
        comparison (:meth:`fit`) otherwise or when there was nothing to compare (at most a day of history)."""
        if previous is None or previous.refits_since_selection is None:
            return self.fit(history)
        age = previous.refits_since_selection + 1
        if age * self.refit_days >= self.selection_days:
            return self.fit(history)
        return AutoFit(previous.chosen, make_forecaster(previous.chosen, self.period).fit(history), age)

    def _predict(self, fitted: AutoFit, history: FloatArray, horizon: int) -> FloatArray:
        return make_forecaster(fitted.chosen, self.period).predict(fitted.fit, history, horizon)

    def one_step(self, fitted: AutoFit, history: FloatArray, start: int) -> FloatArray:
        return make_forecaster(fitted.chosen, self.period).one_step(fitted.fit, history, start)


#: Every forecaster by name, in the order tables list them.
FORECASTERS: Mapping[str, type[Forecaster]] = {
    cls.name: cls
    for cls in (
        WarmServeForecaster,
        Ets,
        StlArima,
        SeasonalNaiveDay,
        SeasonalNaiveWeek,
        LastValue,
        Auto,
    )
}
BASELINES: tuple[str, ...] = (SeasonalNaiveDay.name, SeasonalNaiveWeek.name, LastValue.name)
_SIMPLEST_FIRST = (*BASELINES[::-1], WarmServeForecaster.name, Ets.name, StlArima.name)


def make_forecaster(name: str, period: int) -> Forecaster:
    """The forecaster registered as ``name``; ``InvalidFieldError`` lists the valid names otherwise."""
    if name not in FORECASTERS:
        raise InvalidFieldError("forecaster", f"one of {', '.join(FORECASTERS)}", name)
    return FORECASTERS[name](period)


@dataclass(frozen=True)
class Forecast:
    """Mean and peak concurrency for each of the next windows (index 0 = the next window); peak ≥ mean."""

    mean: tuple[float, ...]
    peak: tuple[float, ...]


@dataclass(frozen=True)
class LoadFit:
    """A forecaster fitted on one model's mean and peak histories (see :func:`fit_load`)."""

    forecaster: Forecaster
    mean: Any
    peak: Any


@functools.cache
def _blas() -> Any:
    """The process's BLAS libraries (scipy's own OpenBLAS included: its least squares and optimisers call
    it), found once: looking them up costs ~0.5 ms, a limit through this controller ~0.01 ms."""
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS, so the controller sees it)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread while the block runs. The fits make thousands of linear-algebra calls on small
    matrices (least squares, the optimisers' steps), on which OpenBLAS' threads only spin: on a shared
    2-core machine a full refit round of 500 models took about twice the CPU without this limit (``ets``
    7.8 s instead of 3.7 s, ``auto`` 13.0 s instead of 6.0 s; docs/forecasting.md, "Refit cost"). The
    limit is process-wide: run fits one at a time (the operator does)."""
    with _blas().limit(limits=1, user_api="blas"):
        yield


def fit_load(
    forecaster: Forecaster,
    history_mean: FloatArray,
    history_peak: FloatArray,
    previous: LoadFit | None = None,
) -> LoadFit:
    """The expensive step, run now and then (each forecaster's :attr:`~Forecaster.refit_days`): fit both
    series of one model, given its ``previous`` fit by the same forecaster if any
    (:meth:`Forecaster.refit`)."""
    with one_blas_thread():
        if previous is None or previous.forecaster.name != forecaster.name:
            return LoadFit(forecaster, forecaster.fit(history_mean), forecaster.fit(history_peak))
        return LoadFit(
            forecaster,
            forecaster.refit(previous.mean, history_mean),
            forecaster.refit(previous.peak, history_peak),
        )


def forecast(
    fit: LoadFit, history_mean: FloatArray, history_peak: FloatArray, horizon_windows: int
) -> Forecast:
    """The cheap online step, every window: mean and peak for the next ``horizon_windows`` windows.

    The histories must start at the same window as those given to :func:`fit_load` (they may have grown
    since). Pure: the same inputs give the same forecast. Never negative or NaN; peak is raised to the mean
    where a model forecasts it lower.
    """
    with one_blas_thread():
        mean = fit.forecaster.predict(fit.mean, history_mean, horizon_windows)
        peak = np.maximum(fit.forecaster.predict(fit.peak, history_peak, horizon_windows), mean)
    return Forecast(tuple(float(v) for v in mean), tuple(float(v) for v in peak))
