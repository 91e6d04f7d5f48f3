"""Forecasts of a replay: the scheduler's :class:`ForecastSource` over a trace's rate history, on the replay's
clock, for ``warmserve local`` and ``warmserve simulate`` alike.

The history is each model's rate series in trace time, already scaled to the replay's load; the replay
starts at trace second ``replay_start_s`` and plays ``time_scale`` trace seconds per replay second. Both
are mapped onto the replay's clock (:func:`replay_time`: concurrency is rate × latency in *replay*
seconds, and a window's peak depends on how many service times fit in it), then turned into per-window
mean and peak concurrency (:func:`load_series`: Little's law plus a Gaussian peak; windows of the trace's
resolution, at least 300 trace seconds; every series on one grid of windows). The forecaster's season is a
day of trace time, however fast the replay plays it. A model's forecast at replay time ``now`` covers
``[now, now + horizon_s]``: the largest mean and peak of the windows it touches. How the windows are
predicted is the :class:`ForecastMode`:

- ``oracle``: each window's true values.
- ``one-step``: each window predicted by the forecaster from the windows before it (one step
  ahead, :func:`rolling_one_step`); the days before the replay are its history and each replay window joins
  it once it is over, as a gateway's measured rate would. Within a horizon longer than a window, the
  prediction of a later window has seen the windows between ``now`` and it. The simulator's online source.
- ``past-only``: the forecaster, fitted on the days before the replay, predicts every window of the
  horizon from the windows already over at ``now`` and nothing later. ``warmserve local``'s source, whose
  horizon (a cold start) spans many of its compressed windows.

The forecaster is the paper's (``warmserve``) unless another name from
:data:`~warmserve.operator.forecast.forecasters.FORECASTERS` is given (``warmserve simulate --forecaster``);
an unknown name raises ``InvalidFieldError`` before any series is built.

Only models with a latency model get a forecast; a window without data (a trace gap) gives none for that
model; ``observe`` records nothing (the history is the trace's). A per-request log's history is its
arrivals counted per window (:func:`~warmserve.operator.forecast.traces.binned`); an empty history gives no
forecasts at all.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from warmserve.operator.forecast.backtest import rolling_one_step
from warmserve.operator.forecast.concurrency import (
    SECONDS_PER_DAY,
    LatencyModel,
    LatencyModels,
    LoadSeries,
    load_series,
)
from warmserve.operator.forecast.forecasters import LoadFit, fit_load, forecast, make_forecaster
from warmserve.operator.forecast.traces import FloatArray, RateSeries
from warmserve.operator.planning.snapshot import Demand, Forecast
from warmserve.operator.ports import ForecastSource

#: The shortest forecast window, in trace seconds.
MIN_WINDOW_SEC = 300.0


class ForecastMode(enum.StrEnum):
    """How the windows of a horizon are predicted (see the module docstring)."""

    ORACLE = "oracle"
    ONE_STEP = "one-step"
    PAST_ONLY = "past-only"


def history_notes(
    history: Sequence[RateSeries], replay_start_s: float, models: Sequence[str]
) -> dict[str, str]:
    """Why a model's forecast is not a forecast: less than a day of rate history before the replay (a log of
    a few hours, or a replay early in it), where the forecaster can only repeat the last window. Said beside
    the figures, because ``warmserve`` then plans about like ``no-forecast`` for that model."""
    notes = {}
    for series in history:
        if series.model not in models:
            continue
        before = max(0, int((replay_start_s - series.start_sec) // series.window_sec))
        seen = int(np.count_nonzero(np.isfinite(series.rate_rps[:before])))
        day = max(1, round(SECONDS_PER_DAY / series.window_sec))
        if seen < day:
            notes[series.model] = (
                f"{seen} windows of history before the replay, less than the day ({day}) a forecast needs: "
                "the online forecast repeats the last window (the oracle still knows the replay)"
            )
    return notes


class TraceForecast:
    """Per-window (mean, peak) concurrency for each model over the replay, looked up by replay time."""

    def __init__(
        self,
        history: Sequence[RateSeries],
        replay_start_s: float,
        time_scale: float,
        duration_s: float,
        latency: Mapping[str, LatencyModel],
        horizon_s: float,
        mode: ForecastMode,
        forecaster: str = "warmserve",
    ) -> None:
        make_forecaster(forecaster, 1)  # an unknown name fails before the series are built
        self.forecaster = forecaster
        self.window_s = 0.0
        self.first = 0
        self.horizon_s = horizon_s
        self.scale = time_scale
        self.start = replay_start_s
        self.origin = 0.0
        self.table: dict[str, tuple[FloatArray, FloatArray]] = {}
        self.fits: dict[str, tuple[LoadSeries, LoadFit]] = {}
        self._cache: tuple[int, int, Mapping[str, Forecast]] = (-1, -1, {})
        history = [s for s in history if s.model in latency]
        if not history:
            return
        window = max(history[0].window_sec, MIN_WINDOW_SEC)
        series = load_series(
            replay_time(history, replay_start_s, time_scale),
            window / time_scale,
            LatencyModels(per_model=dict(latency)),
        )
        self.window_s = window
        self.origin = history[0].start_sec
        self.first = int((replay_start_s - self.origin) // window)
        count = math.ceil(duration_s * time_scale / window) + 1
        for s in series:
            self._add(s, min(self.first + count, len(s.mean)), mode)

    def _add(self, load: LoadSeries, last: int, mode: ForecastMode) -> None:
        """Predict ``load``'s replay windows up to ``last`` as ``mode`` says (past-only: fit it only)."""
        forecaster = make_forecaster(self.forecaster, max(1, round(SECONDS_PER_DAY / self.window_s)))  # a day
        if mode is ForecastMode.PAST_ONLY:
            self.fits[load.model] = (
                load,
                fit_load(forecaster, load.mean[: self.first], load.peak[: self.first]),
            )
            return
        if mode is ForecastMode.ORACLE:
            mean, peak = load.mean[self.first : last], load.peak[self.first : last]
        else:
            mean = rolling_one_step(forecaster, load.mean[:last], self.first)
            peak = rolling_one_step(forecaster, load.peak[:last], self.first)
        self.table[load.model] = (np.maximum(mean, 0.0), np.maximum(peak, mean))

    def observe(self, now: float, demand: Mapping[str, Demand]) -> None:
        return None

    def forecasts(self, now: float) -> Mapping[str, Forecast]:
        if not (self.table or self.fits):
            return {}
        a = self._index(now)
        b = self._index(now + self.horizon_s)
        if (a, b) == self._cache[:2]:
            return self._cache[2]
        found = self._past_only(a, b) if self.fits else self._from_table(a, b)
        self._cache = (a, b, found)
        return found

    def window(self, now: float) -> int:
        """Index of the replay window holding ``now`` (the forecast changes only when it does)."""
        return self._index(now)

    def _index(self, now: float) -> int:
        return int((self.start + now * self.scale - self.origin) // self.window_s) - self.first

    def _from_table(self, a: int, b: int) -> dict[str, Forecast]:
        """The largest mean and peak of the table's windows ``a`` to ``b``."""
        found: dict[str, Forecast] = {}
        for model, (mean, peak) in self.table.items():
            lo, hi = max(a, 0), min(b, len(mean) - 1)
            if lo > hi:
                continue
            m, p = float(np.max(mean[lo : hi + 1])), float(np.max(peak[lo : hi + 1]))
            if math.isfinite(m) and math.isfinite(p):
                found[model] = Forecast(m, max(p, m))
        return found

    def _past_only(self, a: int, b: int) -> dict[str, Forecast]:
        """The largest mean and peak predicted for windows ``a`` to ``b`` from the windows before ``a``."""
        seen = self.first + a  # windows over at the instant: every one before the window holding it
        if seen < 1:
            return {}
        found: dict[str, Forecast] = {}
        for model, (load, fit) in self.fits.items():
            f = forecast(fit, load.mean[:seen], load.peak[:seen], b - a + 1)
            found[model] = Forecast(max(f.mean), max(max(f.peak), max(f.mean)))
        return found


class ReplayClock:
    """``source`` read on the replay's clock (seconds since the replay began) by a scheduler whose clock
    reads ``offset_s`` at that instant (epoch seconds on a cluster).

    ``warmserve local``'s scheduler ticks before the replay starts (so the cluster settles); its forecasts
    at the replay's second ``t`` must see the trace up to ``t`` only, never a glimpse of the future the
    replay has not played.
    """

    def __init__(self, source: ForecastSource, offset_s: float) -> None:
        self.source = source
        self.offset_s = offset_s

    def observe(self, now: float, demand: Mapping[str, Demand]) -> None:
        self.source.observe(now - self.offset_s, demand)

    def forecasts(self, now: float) -> Mapping[str, Forecast]:
        return self.source.forecasts(now - self.offset_s)


def replay_time(
    history: Sequence[RateSeries], replay_start_s: float, time_scale: float
) -> tuple[RateSeries, ...]:
    """The rate history as the replay plays it: ``time_scale`` times faster and denser, from the replay's
    start (negative before it)."""
    return tuple(
        replace(
            s,
            start_sec=(s.start_sec - replay_start_s) / time_scale,
            window_sec=s.window_sec / time_scale,
            rate_rps=s.rate_rps * time_scale,
        )
        for s in history
    )
