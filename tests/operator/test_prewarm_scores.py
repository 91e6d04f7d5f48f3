"""Replica demand and scores (docs/planning.md), checked against hand-computed values."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.operator.planning_builders import model, prewarmed, snapshot
from warmserve.operator.planning.prewarm_scores import ScoreConfig, prewarm_scores, rank_score, replica_demand
from warmserve.protocol.state import ReplicaState

A = model("a", 4, b=8)  # cold start: 4 GiB at 1 GiB/s = 4 s


def test_foundation_and_burst_counts_follow_the_formulas() -> None:
    demand = replica_demand(A, mean=20, peak=37, instances=1)
    assert (demand.foundation, demand.burst) == (2, 2)  # ceil(20/8) - 1, ceil(37/8) - 1 - 2
    assert replica_demand(A, mean=20, peak=37, instances=5).total == 0
    assert (replica_demand(A, 0, 10, 0).foundation, replica_demand(A, 0, 10, 0).burst) == (0, 2)


def test_max_instances_caps_the_replicas_burst_first() -> None:
    demand = replica_demand(replace(A, max_instances=3), mean=20, peak=37, instances=1)
    assert (demand.foundation, demand.burst) == (2, 0)


def test_scores_decay_with_rank_and_bursts_weigh_peak_over_mean() -> None:
    demand = replica_demand(A, mean=20, peak=37, instances=1)
    config = ScoreConfig()
    assert rank_score(A, demand, 0, config) == pytest.approx(4.0)
    assert rank_score(A, demand, 1, config) == pytest.approx(4 * math.exp(-1 / 4))
    # 4·e^(-2/4)·37/20 = 4.49 and 4·e^(-3/4)·37/20 = 3.50 would outrank the last foundation replica
    assert rank_score(A, demand, 2, config) == pytest.approx(4 * math.exp(-1 / 4))
    assert rank_score(A, demand, 3, config) == pytest.approx(4 * math.exp(-1 / 4))
    small_burst = replica_demand(A, mean=20, peak=25, instances=0)  # nf = 3, nb = 1, x 1.25
    assert rank_score(A, small_burst, 3, config) == pytest.approx(4 * math.exp(-3 / 4) * 25 / 20)
    assert rank_score(A, demand, 4, config) == 0.0
    idle_mean = replica_demand(A, mean=0, peak=10, instances=0)
    assert rank_score(A, idle_mean, 0, config) == pytest.approx(4 * 10 / 1.0)  # mean floored at 1
    assert rank_score(replace(A, priority=2.0), demand, 0, config) == pytest.approx(8.0)


@given(st.floats(0, 500), st.floats(0, 500), st.integers(0, 50))
def test_instances_plus_replicas_cover_the_peak_and_never_overshoot(
    mean: float, extra: float, instances: int
) -> None:
    demand = replica_demand(A, mean, mean + extra, instances)
    b = A.spec.max_concurrency
    assert instances + demand.total == max(instances, math.ceil((mean + extra) / b))
    assert demand.foundation == max(math.ceil(mean / b) - instances, 0)


def test_prewarmed_replicas_rank_loaded_first_then_oldest_and_surplus_scores_zero() -> None:
    snap = snapshot(
        [A, model("b")],
        [
            replace(prewarmed("new", "a", [0], since=5.0), state=ReplicaState.LOADING, progress=0.5),
            prewarmed("old", "a", [1], since=9.0),
            prewarmed("extra", "a", [2], since=1.0),
            prewarmed("nofc", "b", [0]),
        ],
        forecasts={"a": (8, 16)},  # nf = 1, nb = 1: a third replica is surplus
    )
    scores = prewarm_scores(snap, ScoreConfig())
    assert scores["extra"] == pytest.approx(4.0)  # loaded and oldest: rank 0
    assert scores["old"] == pytest.approx(4.0)  # burst: 4·e^(-1/2)·2 capped at the foundation's score
    assert scores["new"] == 0.0
    assert scores["nofc"] == 0.0


@given(st.floats(0, 100), st.floats(0, 400), st.integers(0, 10))
def test_scores_never_rise_with_rank(mean: float, extra: float, instances: int) -> None:
    """Greedy placement places a model's ranks in order and evicts by score: a later rank scoring more
    than an earlier one would be placed after lower-score replicas it then evicts at the next step."""
    demand = replica_demand(A, mean, mean + extra, instances)
    scores = [rank_score(A, demand, rank, ScoreConfig()) for rank in range(demand.total + 1)]
    assert all(later <= earlier for earlier, later in itertools.pairwise(scores))
