"""Decision records from a snapshot and its plan: one per Prewarm, ColdStart, Promote, Demote and Evict, in
plan order, naming the model, the replica, the worker it is on and the forecast and demand behind it; KV
lending has none (docs/operator.md, "Events")."""

from __future__ import annotations

from tests.operator.planning_builders import model, prewarmed, serving, snapshot
from warmserve.operator.decisions import REASONS, decision_records
from warmserve.operator.planning.plan import ColdStart, Demote, Evict, LendKV, Plan, Prewarm, Promote
from warmserve.operator.planning.planner import plan_step
from warmserve.operator.planning.reactive import ReactiveState


def test_a_planned_promotion_and_its_evictions_are_recorded_with_worker_and_demand() -> None:
    snap = snapshot(
        [model("a"), model("b")],
        [prewarmed("pa", "a", [1], worker="w0"), prewarmed("pb", "b", [1]), prewarmed("pb2", "b", [0])],
        demand={"a": 1.0},
    )
    plan = plan_step(snap, ReactiveState())[0]
    records = decision_records(snap, plan)
    assert [(r.reason, r.replica_id) for r in records] == [
        (REASONS[type(a)], a.replica_id) for a in plan if type(a) in REASONS
    ]
    promote = next(r for r in records if r.reason == "Promote")
    assert (promote.model, promote.worker) == ("a", "w0")
    assert promote.message.startswith("promote replica pa of a on worker w0 to serving: ")
    assert "no weight copy" in promote.message  # the planner's own reason
    assert "no forecast, demand 1 in flight 0 queued, 0 instances before this plan" in promote.message
    assert any(r.reason == "Evict" and r.replica_id == "pb" for r in records)


def test_every_recorded_kind_says_what_it_does_with_the_forecast_and_kv_lending_is_not_recorded() -> None:
    snap = snapshot(
        [model("a"), model("b")],
        [serving("sa", "a", [0], 4, worker="w0"), prewarmed("pb", "b", [1])],
        forecasts={"a": (1.5, 3.0)},
        demand={"a": 2.0},
    )
    plan = Plan(
        (
            Demote("sa", "a", "load fell"),
            Evict("pb", "b", "room needed"),
            Prewarm("a@w0:2", "a", "w0", (2,), 0.25, True, "forecast peak"),
            ColdStart("a@w0:3", "a", "w0", (3,), "no prewarmed replica"),
            Promote("sa", "a", "load rose"),
            LendKV("sa", "a", 1, "idle KV"),
        )
    )
    records = decision_records(snap, plan)
    assert [r.reason for r in records] == ["Demote", "Evict", "Prewarm", "ColdStart", "Promote"]
    assert [r.worker for r in records] == ["w0"] * 5
    demote, evict, prewarm, cold, _ = (r.message for r in records)
    assert demote.startswith("demote replica sa of a on worker w0 to prewarmed: load fell (")
    assert evict.startswith(
        "evict replica pb of b on worker w0: room needed (no forecast, demand 0 in flight"
    )
    assert prewarm.startswith("prewarm replica a@w0:2 of a on worker w0 in lent KV space, score 0.25: ")
    assert cold.startswith("cold start replica a@w0:3 of a on worker w0: no prewarmed replica (")
    assert "forecast peak 3 mean 1.5, demand 2 in flight 0 queued, 1 instances before this plan" in cold


def test_an_action_on_a_replica_the_snapshot_lacks_is_recorded_with_no_worker() -> None:
    snap = snapshot([model("a")])
    (record,) = decision_records(snap, Plan((Evict("gone", "a", "why"),)))
    assert record.worker == "" and "on worker (unknown)" in record.message
