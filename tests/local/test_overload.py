"""A replay that offers more than the local cluster can serve says so, in figures and naming the options;
one the cluster keeps up with does not. Arrivals are sampled as ``warmserve local`` samples them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from warmserve.local.arrivals import sample_arrivals
from warmserve.local.cli import _replay_slice
from warmserve.local.overload import ReplayLoad, replay_load
from warmserve.local.setup import LocalSetup, default_models
from warmserve.local.traces import load_rates


def load_of(trace: Path | None, **options: float) -> ReplayLoad:
    """The load of ``warmserve local`` on ``trace`` with its default options but ``options``."""
    defaults = {"day": 7, "hours": 24.0, "duration": 60.0, "rps": 40.0, "seed": 0}
    args = argparse.Namespace(**{**defaults, **options})
    series = load_rates(trace)
    setup = LocalSetup(default_models([s.model for s in series]))
    series = tuple(s for s in series if s.model in setup.models)
    replay = _replay_slice(args, series)
    return replay_load(sample_arrivals(series, replay), setup, replay.duration_s)


@pytest.fixture
def half_hour(tmp_path: Path) -> Path:
    """A per-request trace with all its requests in half an hour of its first day."""
    trace = tmp_path / "dated.csv"
    rows = [f"2023-11-16 18:{m:02d}:{s:02d},100,10" for m in range(30) for s in (0, 30)]
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    return trace


def test_a_day_packed_into_half_an_hour_of_requests_warns_with_figures_and_options(half_hour: Path) -> None:
    load = load_of(half_hour, day=0, rps=5.0)
    assert load.offered_peak_rps > 40 * load.offered_mean_rps  # a whole day's requests in 1/48 of it
    assert load.offered_peak_rps > load.capacity_rps
    warning = load.warning()
    assert warning is not None and "\n" not in warning
    assert f"{load.offered_peak_rps:.0f} req/s" in warning and f"{load.capacity_rps:.0f} req/s" in warning
    assert all(option in warning for option in ("--rps", "--day/--hours", "--workers/--gpus"))
    assert load.as_json()["overload_warning"] == warning


def test_the_same_trace_at_a_rate_the_cluster_takes_does_not_warn(half_hour: Path) -> None:
    load = load_of(half_hour, day=0, rps=1.0)
    assert load.offered_peak_rps < load.capacity_rps
    assert load.warning() is None and load.as_json()["overload_warning"] is None


def test_the_default_replay_of_the_shipped_sample_does_not_warn() -> None:
    load = load_of(None)
    assert 35 < load.offered_mean_rps < 45 and load.warning() is None


def test_a_rate_past_the_clusters_warns_on_the_shipped_sample_too() -> None:
    assert load_of(None, rps=1000.0).warning() is not None
