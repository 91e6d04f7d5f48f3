"""Arrivals or rates → per-model mean and peak concurrency per window, the series the forecasters see.

Concurrency (requests in flight) is what sizes replicas, so that is what WarmServe forecasts. A per-request
trace gives it exactly: every request occupies ``[arrival, arrival + latency)`` and a sweep over those
events yields the time-average (mean) and the maximum (peak) in each window. A rate trace only gives a rate
and a burstiness per window, so concurrency comes analytically (see docs/forecasting.md):

* mean = λ·S (Little's law, S = mean latency of the model);
* in-flight requests at a time are the arrivals of the last S seconds: mean λS, variance ≈ λS·cv²
  (renewal-process asymptotics); the largest of the N = W/S such counts in a window of W seconds is about
  mean + sqrt(2 ln N)·sd (Gaussian extreme), the peak.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from warmserve.operator.forecast.series import FloatArray, RateSeries, RequestSeries, Trace
from warmserve.protocol.errors import InvalidFieldError

SECONDS_PER_DAY = 86_400.0
#: The paper's forecast window.
DEFAULT_WINDOW_SEC = 300.0


@dataclass(frozen=True)
class LatencyModel:
    """Service time of one request: ``prefill_sec_per_token × input + decode_sec_per_token × output``.

    Defaults are a 7–13B model on one modern GPU: ≈5,000 prefill tokens/s and ≈33 decode tokens/s per
    request. ``mean_input_tokens``/``mean_output_tokens`` stand in for requests whose token counts the trace
    lacks (all of a rate trace, whose mean latency is :attr:`mean_latency_sec`). A measured duration in
    the trace wins over this model.
    """

    prefill_sec_per_token: float = 2e-4
    decode_sec_per_token: float = 3e-2
    mean_input_tokens: float = 1024.0
    mean_output_tokens: float = 256.0

    def __post_init__(self) -> None:
        for name in (
            "prefill_sec_per_token",
            "decode_sec_per_token",
            "mean_input_tokens",
            "mean_output_tokens",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidFieldError(name, "a finite number ≥ 0", value)
        if self.mean_latency_sec <= 0:
            raise InvalidFieldError("latency", "a positive mean latency (some cost per token)", 0.0)

    @property
    def mean_latency_sec(self) -> float:
        """Latency of a request with the mean token counts."""
        return (
            self.prefill_sec_per_token * self.mean_input_tokens
            + self.decode_sec_per_token * self.mean_output_tokens
        )

    def latency_sec(self, input_tokens: FloatArray, output_tokens: FloatArray) -> FloatArray:
        """Per-request latency; a NaN token count is replaced by the mean count."""
        inputs = np.where(np.isfinite(input_tokens), input_tokens, self.mean_input_tokens)
        outputs = np.where(np.isfinite(output_tokens), output_tokens, self.mean_output_tokens)
        return np.asarray(
            self.prefill_sec_per_token * inputs + self.decode_sec_per_token * outputs, dtype=float
        )


@dataclass(frozen=True)
class LatencyModels:
    """A latency model per model name, ``default`` for the others."""

    default: LatencyModel = LatencyModel()
    per_model: Mapping[str, LatencyModel] = field(default_factory=dict)

    def for_model(self, model: str) -> LatencyModel:
        return self.per_model.get(model, self.default)


@dataclass(frozen=True)
class LoadSeries:
    """One model's mean and peak concurrency per window; window i starts at ``start_sec + i*window_sec``.

    NaN marks a window the trace has no data for (a gap), which forecasters must tolerate.
    """

    model: str
    start_sec: float
    window_sec: float
    mean: FloatArray
    peak: FloatArray

    @property
    def windows_per_day(self) -> int:
        """The daily period in windows (at least 1), used by every seasonal forecaster."""
        return max(1, round(SECONDS_PER_DAY / self.window_sec))


def default_window_sec(trace: Trace, preferred_sec: float = DEFAULT_WINDOW_SEC) -> float:
    """``preferred_sec`` for a request trace; for a rate trace, the smallest whole multiple of its
    resolution that is at least ``preferred_sec`` (600 s for ServeGen)."""
    resolutions = [s.window_sec for s in trace if isinstance(s, RateSeries)]
    if not resolutions:
        return preferred_sec
    resolution = max(resolutions)
    return resolution * max(1, math.ceil(preferred_sec / resolution - 1e-9))


def load_series(
    trace: Trace, window_sec: float, latency: LatencyModels = LatencyModels()
) -> tuple[LoadSeries, ...]:
    """Concurrency series of every model of ``trace`` at ``window_sec`` (see the module docstring).

    A rate trace only allows whole multiples of its resolution (``InvalidFieldError`` otherwise); a trailing
    partial window is dropped. A request trace allows any positive window.
    """
    if not (math.isfinite(window_sec) and window_sec > 0):
        raise InvalidFieldError("window", "a positive number of seconds", window_sec)
    return tuple(
        _from_rates(s, window_sec, latency.for_model(s.model))
        if isinstance(s, RateSeries)
        else _from_requests(s, window_sec, latency.for_model(s.model))
        for s in trace
    )


def _from_rates(series: RateSeries, window_sec: float, latency: LatencyModel) -> LoadSeries:
    ratio = window_sec / series.window_sec
    per_window = round(ratio)
    if per_window < 1 or abs(ratio - per_window) > 1e-9:
        raise InvalidFieldError(
            "window", f"a whole multiple of the trace's {series.window_sec:g} s resolution", window_sec
        )
    count = len(series.rate_rps) // per_window
    if count == 0:
        raise InvalidFieldError(
            "window", f"at most the trace's span ({len(series.rate_rps) * series.window_sec:g} s)", window_sec
        )
    service = latency.mean_latency_sec
    mean = series.rate_rps[: count * per_window] * service
    spread = np.sqrt(mean) * series.cv[: count * per_window]
    z = math.sqrt(2.0 * math.log(max(window_sec / service, 1.0)))
    peak = mean + z * spread
    shape = (count, per_window)
    return LoadSeries(
        series.model,
        series.start_sec,
        window_sec,
        _nan_reduce(mean.reshape(shape), "mean"),
        _nan_reduce(peak.reshape(shape), "max"),
    )


def _nan_reduce(blocks: FloatArray, how: Literal["mean", "max"]) -> FloatArray:
    """Reduce each row over its finite entries; a row with none stays NaN (a gap)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row is a gap, not a problem
        reduced = np.nanmean(blocks, axis=1) if how == "mean" else np.nanmax(blocks, axis=1)
    return np.asarray(reduced, dtype=float)


def _from_requests(series: RequestSeries, window_sec: float, latency: LatencyModel) -> LoadSeries:
    """Exact sweep: each request is in flight from arrival to arrival + latency (or its measured duration)."""
    arrivals = series.arrival_sec
    modelled = latency.latency_sec(series.input_tokens, series.output_tokens)
    durations = np.where(np.isfinite(series.duration_sec), series.duration_sec, modelled)
    start = math.floor(arrivals[0] / window_sec) * window_sec
    count = max(1, math.ceil((arrivals[-1] - start) / window_sec + 1e-12))
    bounds = start + window_sec * np.arange(count + 1)
    # Events: +1 at arrival, -1 at finish, 0 at window bounds (so each segment lies in one window).
    # Finishes sort before arrivals at the same instant, so back-to-back requests do not count twice.
    times = np.concatenate([arrivals + durations, bounds, arrivals])
    deltas = np.concatenate([-np.ones(len(arrivals)), np.zeros(len(bounds)), np.ones(len(arrivals))])
    order = np.lexsort((deltas, times))
    times, level = times[order], np.cumsum(deltas[order])
    lengths = np.diff(times)
    inside = (times[:-1] >= start) & (times[:-1] < bounds[-1]) & (lengths > 0)
    index = np.minimum(((times[:-1][inside] - start) // window_sec).astype(int), count - 1)
    area = np.bincount(index, weights=level[:-1][inside] * lengths[inside], minlength=count)
    peak = np.zeros(count)
    np.maximum.at(peak, index, level[:-1][inside])
    return LoadSeries(series.model, float(start), window_sec, area / window_sec, peak)
