"""Desired states: what the scheduler writes to each worker once a plan is applied."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.operator.planning_builders import GIB, model, prewarmed, serving, snapshot, workers
from warmserve.operator.planning.desired import desired_states
from warmserve.operator.planning.plan import apply_plan
from warmserve.operator.planning.planner import plan_step
from warmserve.operator.planning.reactive import ReactiveState
from warmserve.protocol.state import DesiredState, ReplicaState, Role


def test_each_worker_gets_its_replicas_with_roles_priorities_and_lent_space() -> None:
    snap = snapshot(
        [model("a", 4), model("b", 2)],
        [
            serving("s", "a", [0], 12, kv_lent_bytes=4 * GIB),
            prewarmed("pb", "b", [0], borrowed=True),
            replace(prewarmed("dead", "b", [1]), state=ReplicaState.FAILED),
        ],
        cluster=workers(2, 2),
        forecasts={"b": (8, 8)},
    )
    states = desired_states(snap, generation=7)
    assert set(states) == {"w0", "w1"}
    w0, w1 = states["w0"], states["w1"]
    assert w1.replicas == () and w1.models == {} and w1.generation == 7
    by_id = {r.id: r for r in w0.replicas}
    assert set(by_id) == {"s", "pb"}  # the failed replica is absent: the worker drops it
    assert by_id["s"].role is Role.SERVE and by_id["s"].kv_lend_bytes == 4 * GIB
    assert by_id["s"].priority == pytest.approx(4.0)  # a's cold start: 4 GiB at 1 GiB/s
    assert by_id["pb"].role is Role.PREWARM and by_id["pb"].priority == pytest.approx(2.0)
    assert set(w0.models) == {"a", "b"}
    assert DesiredState.from_json(w0.to_json()) == w0


def test_a_planned_cluster_yields_documents_the_worker_accepts() -> None:
    snap = snapshot([model("a", 4), model("t", 8, tp=2)], demand={"a": 12.0}, forecasts={"t": (10, 30)})
    plan, _ = plan_step(snap, ReactiveState())
    states = desired_states(apply_plan(snap, plan), generation=1)
    roles = sorted((r.model, r.role.value) for r in states["w0"].replicas)
    assert roles == [("a", "serve"), ("a", "serve"), ("t", "prewarm")]
    assert DesiredState.from_json(states["w0"].to_json()) == states["w0"]
