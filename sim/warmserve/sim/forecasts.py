"""Forecast sources for simulated runs: learned from the trace's history (``online``) or the trace's
true future (``oracle``), both as the scheduler's :class:`ForecastSource`.

Both work on the per-window mean and peak concurrency of each model's scaled rate series
(:func:`load_series`, with a service time per model from the timing model). ``online`` is the paper's
forecaster (:class:`WarmServeForecaster`) predicting each replay window from the windows before it: the
days before the replay are its history, and each replay window joins the history once it is over (as a
gateway's measured rate would), so one-step-ahead predictions (:func:`rolling_one_step`) are exactly
what it could know. ``oracle`` returns the replay window's true values. A model's forecast for ``now``
covers ``[now, now + horizon_s]`` (the largest mean and peak of the windows it touches); a window without
data (a trace gap) gives no forecast for that model. ``observe`` records nothing: the history is the
trace's. A workload without rate history (a per-request trace) gives no forecasts at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from warmserve.operator.forecast.backtest import rolling_one_step
from warmserve.operator.forecast.concurrency import LatencyModel, LatencyModels, load_series
from warmserve.operator.forecast.forecasters import WarmServeForecaster
from warmserve.operator.forecast.traces import RateSeries
from warmserve.operator.planning.snapshot import Demand, Forecast
from warmserve.sim.workload import FloatArray, Workload


class TraceForecast:
    """Per-window (mean, peak) concurrency for each model over the replay, looked up by virtual time."""

    def __init__(
        self, workload: Workload, latency: Mapping[str, LatencyModel], oracle: bool, horizon_s: float
    ) -> None:
        self.window_s = 0.0
        self.first = 0
        self.horizon_s = horizon_s
        self.scale = workload.time_scale
        self.start = workload.replay_start_s
        self.table: dict[str, tuple[FloatArray, FloatArray]] = {}
        self.origin = 0.0
        self._cache: tuple[int, int, Mapping[str, Forecast]] = (-1, -1, {})
        if not workload.history:
            return
        window = max(workload.history[0].window_sec, 300.0)
        series = load_series(
            replay_time(workload), window / self.scale, LatencyModels(per_model=dict(latency))
        )
        self.window_s = window
        self.origin = workload.history[0].start_sec
        self.first = int((workload.replay_start_s - self.origin) // window)
        count = math.ceil(workload.duration_s * workload.time_scale / window) + 1
        for s in series:
            last = min(self.first + count, len(s.mean))
            if oracle:
                mean, peak = s.mean[self.first : last], s.peak[self.first : last]
            else:
                forecaster = WarmServeForecaster(s.windows_per_day)
                mean = rolling_one_step(forecaster, s.mean[:last], self.first)
                peak = rolling_one_step(forecaster, s.peak[:last], self.first)
            self.table[s.model] = (np.maximum(mean, 0.0), np.maximum(peak, mean))

    def observe(self, now: float, demand: Mapping[str, Demand]) -> None:
        return None

    def forecasts(self, now: float) -> Mapping[str, Forecast]:
        if not self.table:
            return {}
        a = self._index(now)
        b = self._index(now + self.horizon_s)
        if (a, b) == self._cache[:2]:
            return self._cache[2]
        found: dict[str, Forecast] = {}
        for model, (mean, peak) in self.table.items():
            lo, hi = max(a, 0), min(b, len(mean) - 1)
            if lo > hi:
                continue
            m, p = float(np.max(mean[lo : hi + 1])), float(np.max(peak[lo : hi + 1]))
            if math.isfinite(m) and math.isfinite(p):
                found[model] = Forecast(m, max(p, m))
        self._cache = (a, b, found)
        return found

    def window(self, now: float) -> int:
        """Index of the replay window holding ``now`` (the forecast changes only when it does)."""
        return self._index(now)

    def _index(self, now: float) -> int:
        return int((self.start + now * self.scale - self.origin) // self.window_s) - self.first


def replay_time(workload: Workload) -> tuple[RateSeries, ...]:
    """The rate history as the replay plays it: ``time_scale`` times faster and denser, from the replay's
    start (negative before it). Concurrency is rate x latency in *replay* seconds, and a window's peak
    depends on how many service times fit in it, so both must be taken on this clock."""
    scale = workload.time_scale
    return tuple(
        replace(
            s,
            start_sec=(s.start_sec - workload.replay_start_s) / scale,
            window_sec=s.window_sec / scale,
            rate_rps=s.rate_rps * scale,
        )
        for s in workload.history
    )
