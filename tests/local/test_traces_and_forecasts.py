"""Trace input of the replay and the forecasts seeded from the days before it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.operator.test_traces import SHARED_TRACES
from warmserve.local.arrivals import ReplaySlice
from warmserve.local.forecasts import trace_forecasts
from warmserve.local.traces import load_rates
from warmserve.operator.forecast.traces import RateSeries, RequestSeries, binned
from warmserve.protocol.errors import InvalidFieldError
from warmserve.replay.forecasts import ReplayClock


def test_the_shipped_sample_has_three_models_over_fourteen_days() -> None:
    series = load_rates(None)
    assert sorted(s.model for s in series) == ["m-large", "m-mid", "m-small"]
    assert all(s.window_sec == 600.0 and len(s.rate_rps) >= 14 * 144 - 1 for s in series)


def test_request_traces_are_binned_into_rates() -> None:
    arrivals = np.array([5.0, 10.0, 70.0, 71.0, 72.0, 200.0])
    nan = np.full(len(arrivals), np.nan)
    rates = binned(RequestSeries("m", arrivals, nan, nan, nan), 60.0)
    assert rates.start_sec == 0.0
    assert list(rates.rate_rps * 60.0) == [2.0, 3.0, 0.0, 1.0]


@pytest.mark.skipif(
    not (SHARED_TRACES / "azure_llm_2023").exists(), reason=f"no Azure trace in {SHARED_TRACES}"
)
def test_a_real_request_trace_by_path() -> None:
    path = next(p for p in sorted((SHARED_TRACES / "azure_llm_2023").rglob("*.csv")))
    series = load_rates(path)
    assert series and all(np.nansum(s.rate_rps) > 0 for s in series)


def test_a_missing_trace_is_named() -> None:
    with pytest.raises(InvalidFieldError, match="trace"):
        load_rates(Path("/nonexistent/trace.csv"))


def daily(days: int, peak_hour: int) -> RateSeries:
    """24 windows a day, busy at ``peak_hour``, quiet otherwise."""
    day = np.full(24, 1.0)
    day[peak_hour] = 20.0
    return RateSeries("m", 0.0, 3600.0, np.tile(day, days), np.ones(24 * days))


def test_forecasts_see_the_coming_burst_from_previous_days() -> None:
    """Seeded with three days busy at 12:00, the fourth day's forecast rises just before noon."""
    replay = ReplaySlice(start_sec=3 * 86_400.0, span_sec=86_400.0, compress=3600.0, rps=5.0)
    source = trace_forecasts([daily(4, 12)], replay, {"m": 0.5}, horizon_s=1.0)
    assert source.forecasts(0.5)["m"].mean > 0  # seeded with the days before: a forecast from the start
    quiet, before_noon = source.forecasts(6.5)["m"], source.forecasts(11.5)["m"]
    assert before_noon.mean > 5 * quiet.mean
    assert before_noon.peak >= before_noon.mean > 0


def test_models_without_a_latency_get_no_forecast() -> None:
    replay = ReplaySlice(start_sec=86_400.0, span_sec=86_400.0, compress=3600.0, rps=5.0)
    assert trace_forecasts([daily(2, 3)], replay, {}, horizon_s=1.0).forecasts(5.0) == {}


def test_a_replay_clock_reads_forecasts_on_the_replays_clock() -> None:
    """The scheduler ticks SETTLE_S before the replay starts: at its time t the forecast is the replay's
    at t - SETTLE_S, which has not yet seen the burst the unshifted source would already show."""
    replay = ReplaySlice(start_sec=3 * 86_400.0, span_sec=86_400.0, compress=3600.0, rps=5.0)
    source = trace_forecasts([daily(4, 12)], replay, {"m": 0.5}, horizon_s=1.0)
    shifted = ReplayClock(source, 1.0)
    assert shifted.forecasts(12.5) == source.forecasts(11.5)
    assert shifted.forecasts(11.5)["m"].mean < source.forecasts(11.5)["m"].mean
