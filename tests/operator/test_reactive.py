"""The reactive autoscaler: thresholds, smoothing window, protection, request-triggered scale-out."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from tests.operator.planning_builders import model, snapshot
from warmserve.operator.planning.reactive import (
    ReactiveConfig,
    ReactiveState,
    observe,
    protect,
    recent_peaks,
    target_instances,
)
from warmserve.operator.planning.snapshot import Demand

A = model("a", b=4)
CONFIG = ReactiveConfig()


def test_scale_out_above_the_threshold_to_the_fewest_instances_that_suffice() -> None:
    target = target_instances(A, 10.0, Demand(10.0), 2, CONFIG)  # 10 > 0.8 x 4 x 2
    assert target.instances == 4  # ceil(10 / 3.2)
    assert "smoothed load 10.00 > 0.8 x B=4 x 2 instances" in target.reason


def test_between_the_thresholds_the_count_holds() -> None:
    assert target_instances(A, 3.0, Demand(3.0), 1, CONFIG) == target_instances(
        A, 2.0, Demand(2.0), 1, CONFIG
    )
    assert target_instances(A, 3.0, Demand(3.0), 1, CONFIG).instances == 1
    assert target_instances(A, 3.0, Demand(3.0), 1, CONFIG).reason == ""


def test_scale_in_keeps_the_fewest_instances_that_stay_half_full() -> None:
    target = target_instances(A, 5.0, Demand(5.0), 4, CONFIG)
    assert target.instances == 3  # ceil(5 / (0.5 x 4)), not ceil(5 / 3.2) = 2 at the scale-out line
    assert "smoothed load at most 5.00 over the last 10 s <= 0.5 x B=4 x 3 instances" in target.reason
    assert target_instances(A, 0.0, Demand(0.0), 3, CONFIG).instances == 0


def test_a_count_just_scaled_out_holds_while_the_load_stays_above_the_scale_in_line() -> None:
    b8 = model("a", b=8)
    assert target_instances(b8, 6.5, Demand(6.5), 1, CONFIG).instances == 2  # 6.5 > 0.8 x 8 x 1
    for load in (6.5, 6.25, 5.0, 4.1):  # under the scale-out line of one instance, above 0.5 x 8 x 1
        assert target_instances(b8, load, Demand(load), 2, CONFIG).instances == 2
    assert target_instances(b8, 4.0, Demand(4.0), 2, CONFIG).instances == 1


def test_a_scale_in_threshold_of_zero_never_scales_in() -> None:
    never = ReactiveConfig(scale_in_threshold=0.0)
    assert target_instances(A, 0.0, Demand(0.0), 3, never).instances == 3


def test_a_request_for_a_model_at_zero_scales_out_at_once() -> None:
    target = target_instances(A, 0.0, Demand(0.0, queued=1), 0, CONFIG)
    assert target.instances == 1 and "no instance" in target.reason


def test_min_and_max_instances_bound_the_target() -> None:
    assert target_instances(replace(A, min_instances=2), 0.0, Demand(0.0), 0, CONFIG).instances == 2
    capped = target_instances(replace(A, max_instances=3), 100.0, Demand(100.0), 1, CONFIG)
    assert capped.instances == 3 and "max_instances=3" in capped.reason


@given(st.floats(0, 1000), st.integers(0, 100))
def test_a_target_is_a_fixed_point(load: float, current: int) -> None:
    first = target_instances(A, load, Demand(load), current, CONFIG).instances
    assert target_instances(A, load, Demand(load), first, CONFIG).instances == first


def test_the_window_averages_the_last_samples_only() -> None:
    config = ReactiveConfig(tick_s=0.5, smoothing_window_s=1.5, scale_in_window_s=0.0)  # 3 samples kept
    state = ReactiveState()
    smoothed = {}
    for load in (9.0, 0.0, 0.0):
        smoothed, state = observe(state, snapshot([A], demand={"a": load}), config)
    assert smoothed["a"] == 3.0
    smoothed, state = observe(state, snapshot([A]), config)  # no demand entry: a zero sample
    assert smoothed["a"] == 0.0
    assert state.samples["a"] == (0.0, 0.0, 0.0)


def test_protection_expires_and_is_forgotten_for_gone_replicas() -> None:
    state = protect(ReactiveState(), ["x", "y"], now=100.0, config=CONFIG)
    assert state.is_protected("x", 109.9) and not state.is_protected("x", 110.0)
    _, later = observe(state, snapshot([A], now=103.0), CONFIG)  # neither replica exists
    assert dict(later.protected_until) == {}


def test_scale_in_waits_until_the_load_stayed_low_for_the_scale_in_window() -> None:
    """A dip under the scale-in line shorter than ``scale_in_window_s`` keeps the instance: demoting it
    drains its requests, and the next rise promotes it again seconds later (the soak benchmark saw a
    demote and promote of one replica 0.5-4 s apart, over and over)."""
    b8 = model("a", b=8)
    config = ReactiveConfig()  # 2 s smoothing, 10 s scale-in window, 0.5 s ticks
    state = ReactiveState()
    history = [6.0] * 20 + [3.0] * 8  # two instances' worth, then 4 s under 0.5 x 8 x 1
    for t, load in enumerate(history):
        loads, state = observe(state, snapshot([b8], demand={"a": load}, now=t * 0.5), config)
    peak = recent_peaks(state, config)["a"]
    assert peak == 6.0
    assert target_instances(b8, loads["a"], Demand(3.0), 2, config, peak).instances == 2
    for t in range(len(history), len(history) + 20):  # 10 s more under the line
        loads, state = observe(state, snapshot([b8], demand={"a": 3.0}, now=t * 0.5), config)
    peak = recent_peaks(state, config)["a"]
    target = target_instances(b8, loads["a"], Demand(3.0), 2, config, peak)
    assert target.instances == 1 and "at most 3.00 over the last 10 s" in target.reason
