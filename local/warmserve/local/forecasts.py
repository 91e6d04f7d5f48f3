"""Forecasts for a replay: a forecaster fed with the trace's own past, in the replay's time and load.

The replayed trace is compressed in time and rescaled in load (:mod:`.arrivals`); this source applies the
same mapping to the *whole* trace, so the days before the replayed slice become the forecaster's history
(seeded before the run starts: the shipped sample's 14 days replayed from day 8 give it 7 days). Window
``i`` of the trace becomes a local window ``compress`` times shorter; concurrency per window comes from the
scaled rates (Poisson, cv = 1, as replayed) and the local mean latency of a request
(:func:`~warmserve.operator.forecast.concurrency.load_series`: Little's law plus a Gaussian peak).
The daily period stays the trace's windows per day.

At local time ``now`` the forecaster sees every trace window that ended before ``now`` — the load a
gateway would have measured had it served the trace (the replay realises a Poisson sample of it) — and
forecasts the windows covering the next ``horizon_s`` seconds; the source answers their largest mean and
largest peak, so a rise inside the horizon is prewarmed for. Models with no data at all get no forecast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from warmserve.local.arrivals import ReplaySlice, rate_scale
from warmserve.operator.forecast.concurrency import (
    SECONDS_PER_DAY,
    LatencyModel,
    LatencyModels,
    LoadSeries,
    load_series,
)
from warmserve.operator.forecast.forecasters import LoadFit, fit_load, forecast, make_forecaster
from warmserve.operator.forecast.traces import RateSeries
from warmserve.operator.planning.snapshot import Demand, Forecast
from warmserve.operator.ports import ForecastSource


@dataclass(frozen=True)
class _Model:
    load: LoadSeries
    fit: LoadFit
    horizon: int  # windows


class TraceForecasts:
    """A :class:`~warmserve.operator.ports.ForecastSource` over a compressed, rescaled rate trace."""

    def __init__(
        self,
        series: Sequence[RateSeries],
        replay: ReplaySlice,
        latency_s: Mapping[str, float],
        horizon_s: float,
        forecaster: str = "warmserve",
    ) -> None:
        scale = rate_scale(series, replay)
        self.models: dict[str, _Model] = {}
        self.cache: dict[tuple[str, int], Forecast] = {}
        for s in series:
            if s.model not in latency_s:
                continue
            load = _local_load(s, replay, scale, latency_s[s.model])
            before = max(0, math.ceil(-load.start_sec / load.window_sec))  # windows ending before the replay
            period = max(1, round(SECONDS_PER_DAY / s.window_sec))
            fit = fit_load(make_forecaster(forecaster, period), load.mean[:before], load.peak[:before])
            self.models[s.model] = _Model(load, fit, max(1, math.ceil(horizon_s / load.window_sec)) + 1)

    def observe(self, now: float, demand: Mapping[str, Demand]) -> None:
        """Nothing to record: the history is the trace's (see the module docstring)."""
        return None

    def forecasts(self, now: float) -> Mapping[str, Forecast]:
        out = {}
        for name, m in self.models.items():
            seen = math.floor((now - m.load.start_sec) / m.load.window_sec)  # windows fully past
            if seen < 1:
                continue
            key = (name, seen)
            if key not in self.cache:
                f = forecast(m.fit, m.load.mean[:seen], m.load.peak[:seen], m.horizon)
                self.cache[key] = Forecast(mean=max(f.mean), peak=max(f.peak))
            out[name] = self.cache[key]
        return out


class ReplayClock:
    """``source`` read on the replay's clock (seconds since the replay began) by a scheduler whose clock
    reads ``offset_s`` at that instant (epoch seconds on a cluster).

    The local scheduler ticks before the replay starts (so the cluster settles); its forecasts at the
    replay's second ``t`` must see the trace up to ``t`` only, never a glimpse of the future the replay
    has not played.
    """

    def __init__(self, source: ForecastSource, offset_s: float) -> None:
        self.source = source
        self.offset_s = offset_s

    def observe(self, now: float, demand: Mapping[str, Demand]) -> None:
        self.source.observe(now - self.offset_s, demand)

    def forecasts(self, now: float) -> Mapping[str, Forecast]:
        return self.source.forecasts(now - self.offset_s)


def _local_load(s: RateSeries, replay: ReplaySlice, scale: float, latency_s: float) -> LoadSeries:
    """The series' concurrency in replay time and load."""
    local = RateSeries(
        model=s.model,
        start_sec=replay.local(s.start_sec),
        window_sec=s.window_sec / replay.compress,
        rate_rps=np.asarray(s.rate_rps * scale, dtype=float),
        cv=np.ones(len(s.rate_rps)),  # the replay is Poisson within a window (see .arrivals)
    )
    latency = LatencyModel(
        prefill_sec_per_token=0.0,
        decode_sec_per_token=latency_s,
        mean_input_tokens=0.0,
        mean_output_tokens=1.0,
    )
    (load,) = load_series((local,), local.window_sec, LatencyModels(default=latency))
    return load
