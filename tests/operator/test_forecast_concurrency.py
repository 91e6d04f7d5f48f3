"""Arrivals and rates → windowed mean and peak concurrency."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warmserve.operator.forecast.concurrency import (
    LatencyModel,
    LatencyModels,
    default_window_sec,
    load_series,
)
from warmserve.operator.forecast.traces import RateSeries, RequestSeries
from warmserve.protocol.errors import InvalidFieldError


def requests(arrivals: list[float], durations: list[float], model: str = "m") -> RequestSeries:
    n = len(arrivals)
    nan = np.full(n, np.nan)
    return RequestSeries(model, np.array(arrivals), nan, nan, np.array(durations))


def test_request_sweep_gives_exact_time_average_and_maximum() -> None:
    # Window 0 [0, 10): request A in flight 1..6 (5 s), B 4..14 (6 s inside); both during 4..6 → peak 2.
    # Window 1 [10, 20): B 10..14 (4 s), C 12..13 (1 s) → mean 0.5, peak 2 during 12..13.
    (load,) = load_series((requests([1.0, 4.0, 12.0], [5.0, 10.0, 1.0]),), 10.0)
    assert load.start_sec == 0.0 and load.window_sec == 10.0
    assert load.mean.tolist() == pytest.approx([1.1, 0.5])
    assert load.peak.tolist() == [2.0, 2.0]


def test_back_to_back_requests_do_not_overlap() -> None:
    (load,) = load_series((requests([0.0, 2.0], [2.0, 2.0]),), 5.0)
    assert load.peak.tolist() == [1.0] and load.mean.tolist() == pytest.approx([0.8])


def test_request_latency_comes_from_tokens_when_no_duration() -> None:
    series = RequestSeries("m", np.array([0.0]), np.array([1000.0]), np.array([10.0]), np.array([np.nan]))
    latency = LatencyModel(prefill_sec_per_token=0.001, decode_sec_per_token=0.1)
    (load,) = load_series((series,), 10.0, LatencyModels(latency))
    assert load.mean.tolist() == pytest.approx([0.2])  # 1 s prefill + 1 s decode over a 10 s window


def test_rate_series_uses_littles_law_and_the_renewal_peak() -> None:
    latency = LatencyModel(prefill_sec_per_token=0.0, decode_sec_per_token=0.01, mean_output_tokens=100)
    rates = RateSeries("m", 0.0, 600.0, np.array([10.0, 0.0, 40.0, np.nan]), np.array([2.0, 0.0, 1.0, 1.0]))
    (load,) = load_series((rates,), 600.0, LatencyModels(latency))
    z = math.sqrt(2 * math.log(600.0 / 1.0))  # S = 1 s, N = 600 intervals per window
    assert load.mean[:3].tolist() == pytest.approx([10.0, 0.0, 40.0])
    assert load.peak[:3].tolist() == pytest.approx([10 + z * math.sqrt(10) * 2, 0.0, 40 + z * math.sqrt(40)])
    assert math.isnan(load.mean[3]) and math.isnan(load.peak[3])


def test_coarser_windows_average_means_and_take_the_largest_peak() -> None:
    latency = LatencyModel(prefill_sec_per_token=0.0, decode_sec_per_token=0.01, mean_output_tokens=100)
    rates = RateSeries("m", 0.0, 600.0, np.array([10.0, 30.0, np.nan, np.nan, 5.0]), np.ones(5))
    (load,) = load_series((rates,), 1200.0, LatencyModels(latency))
    z = math.sqrt(2 * math.log(1200.0))
    assert load.mean.tolist()[0] == pytest.approx(20.0) and math.isnan(load.mean[1])
    assert load.peak[0] == pytest.approx(30 + z * math.sqrt(30))
    assert len(load.mean) == 2  # the trailing half window is dropped


def test_windows_the_trace_cannot_give_are_refused() -> None:
    rates = RateSeries("m", 0.0, 600.0, np.ones(3), np.ones(3))
    for window in (300.0, 900.0, 0.0, -5.0, math.nan):
        with pytest.raises(InvalidFieldError, match="window"):
            load_series((rates,), window)
    with pytest.raises(InvalidFieldError, match="span"):
        load_series((rates,), 6000.0)


def test_default_window_is_300_s_or_the_coarser_resolution() -> None:
    rates = RateSeries("m", 0.0, 600.0, np.ones(3), np.ones(3))
    assert default_window_sec((rates,)) == 600.0
    assert default_window_sec((RateSeries("m", 0.0, 60.0, np.ones(3), np.ones(3)),)) == 300.0
    assert default_window_sec((requests([0.0], [1.0]),)) == 300.0


def test_latency_model_rejects_bad_parameters() -> None:
    with pytest.raises(InvalidFieldError, match="decode_sec_per_token"):
        LatencyModel(decode_sec_per_token=-1.0)
    with pytest.raises(InvalidFieldError, match="positive mean latency"):
        LatencyModel(prefill_sec_per_token=0.0, decode_sec_per_token=0.0)


def test_per_model_latency_overrides_the_default() -> None:
    slow = LatencyModel(prefill_sec_per_token=0.0, decode_sec_per_token=1.0, mean_output_tokens=2.0)
    models = LatencyModels(per_model={"big": slow})
    assert models.for_model("big") is slow and models.for_model("other") == LatencyModel()
