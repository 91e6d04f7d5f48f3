"""Arrival sampling: deterministic per seed, inside the replay, at the requested mean rate."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warmserve.local.arrivals import ReplaySlice, rate_scale, sample_arrivals
from warmserve.operator.forecast.traces import RateSeries
from warmserve.protocol.errors import InvalidFieldError


def series(model: str, rates: list[float], window: float = 600.0, start: float = 0.0) -> RateSeries:
    return RateSeries(model, start, window, np.array(rates, dtype=float), np.ones(len(rates)))


def test_same_seed_same_arrivals_other_seed_others() -> None:
    trace = [series("a", [1.0, 2.0, 3.0]), series("b", [5.0, 0.0, 1.0])]
    replay = ReplaySlice(0.0, 1800.0, compress=60.0, rps=20.0, seed=3)
    assert sample_arrivals(trace, replay) == sample_arrivals(trace, replay)
    other = ReplaySlice(0.0, 1800.0, compress=60.0, rps=20.0, seed=4)
    assert sample_arrivals(trace, replay) != sample_arrivals(trace, other)


def test_rates_follow_the_trace_and_its_models() -> None:
    """A window ten times busier gets about ten times the arrivals; a gap (NaN) gets none."""
    trace = [series("a", [1.0, 10.0, math.nan, 1.0])]
    replay = ReplaySlice(0.0, 2400.0, compress=10.0, rps=50.0)
    times = np.array([a.at_s for a in sample_arrivals(trace, replay)])
    counts = np.histogram(times, bins=[0, 60, 120, 180, 240])[0]
    assert counts[2] == 0
    assert 6 < counts[1] / counts[0] < 16
    assert abs(len(times) - 50.0 * 240) < 5 * math.sqrt(50.0 * 240)


def test_only_the_slice_is_replayed_from_zero() -> None:
    trace = [series("a", [100.0] * 10)]
    replay = ReplaySlice(start_sec=1800.0, span_sec=1200.0, compress=100.0, rps=30.0)
    arrivals = sample_arrivals(trace, replay)
    assert arrivals and all(0.0 <= a.at_s < replay.duration_s for a in arrivals)
    assert [a.at_s for a in arrivals] == sorted(a.at_s for a in arrivals)


@settings(max_examples=30, deadline=None)
@given(
    rates=st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1000.0)), min_size=2, max_size=12),
    rps=st.floats(1.0, 100.0),
    seed=st.integers(0, 2**16),
)
def test_mean_rate_is_the_requested_one(rates: list[float], rps: float, seed: int) -> None:
    """The scale makes the expected total exactly ``rps × duration``; the sample stays near it."""
    if sum(rates) == 0:
        rates[0] = 1.0
    trace = [series("a", rates), series("b", rates[::-1])]
    replay = ReplaySlice(0.0, 600.0 * len(rates), compress=600.0, rps=rps, seed=seed)
    expected = rps * replay.duration_s
    assert sum(r * 600.0 for r in rates) * 2 * rate_scale(trace, replay) == pytest.approx(expected * 600.0)
    assert abs(len(sample_arrivals(trace, replay)) - expected) <= 6 * math.sqrt(expected) + 1


def test_an_empty_slice_is_an_error_naming_the_trace() -> None:
    with pytest.raises(InvalidFieldError, match="trace"):
        rate_scale([series("a", [0.0, 0.0])], ReplaySlice(0.0, 1200.0, 10.0, 5.0))
    with pytest.raises(InvalidFieldError, match="trace"):  # found by hypothesis: the factor overflowed
        rate_scale([series("a", [0.0, 2.225073858507e-311])], ReplaySlice(0.0, 1200.0, 10.0, 5.0))
    with pytest.raises(InvalidFieldError, match="trace"):
        rate_scale([series("a", [1.0, 1.0])], ReplaySlice(5000.0, 1200.0, 10.0, 5.0))


@pytest.mark.parametrize("field", ["span_sec", "compress", "rps"])
@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan])
def test_bad_slices_name_the_field(field: str, value: float) -> None:
    good = ReplaySlice(start_sec=0.0, span_sec=60.0, compress=1.0, rps=1.0)
    bad: dict[str, Any] = {field: value}
    with pytest.raises(InvalidFieldError, match=field):
        dataclasses.replace(good, **bad)


def test_windows_shorter_than_a_gap_are_replayed_at_their_rate() -> None:
    """A compressed window can be far shorter than the mean gap between two arrivals (here a fifth of it):
    the process must still give each window its share, not start every window a whole gap late."""
    trace = [series("a", [1.0] * 1000)]
    replay = ReplaySlice(0.0, 600_000.0, compress=6000.0, rps=2.0)  # 0.1 s windows, 0.2 arrivals each
    assert abs(len(sample_arrivals(trace, replay)) - 200) <= 6 * math.sqrt(200)
