"""Planning rules on small hand-checked clusters (1 worker x 4 GPUs of 16 GiB unless said)."""

from __future__ import annotations

from dataclasses import replace

from tests.operator.planning_builders import GIB, model, prewarmed, serving, snapshot, workers
from warmserve.operator.planning.plan import (
    Action,
    ColdStart,
    Demote,
    Evict,
    LendKV,
    Plan,
    Prewarm,
    Promote,
    ReclaimKV,
    apply_plan,
)
from warmserve.operator.planning.planner import PlannerConfig, plan_step
from warmserve.operator.planning.reactive import ReactiveState
from warmserve.operator.planning.snapshot import Demand, Snapshot
from warmserve.protocol.state import ReplicaState


def step(snap: Snapshot, state: ReactiveState | None = None, config: PlannerConfig | None = None) -> Plan:
    return plan_step(snap, state or ReactiveState(), config)[0]


def of(plan: Plan, kind: type[Action]) -> list[Action]:
    return [a for a in plan.actions if isinstance(a, kind)]


def test_a_request_for_a_model_at_zero_promotes_its_prewarmed_replica_and_drops_its_neighbours() -> None:
    snap = snapshot(
        [model("a"), model("b")],
        [prewarmed("pa", "a", [1]), prewarmed("pb", "b", [1]), prewarmed("pb2", "b", [0])],
        demand={"a": 1.0},
    )
    plan = step(snap)
    assert [a.replica_id for a in of(plan, Promote)] == ["pa"]
    assert "no weight copy" in plan.actions[1].reason
    assert not of(plan, ColdStart)
    evicted = of(plan, Evict)
    assert [e.replica_id for e in evicted] == ["pb"]
    assert "promotion of pa" in evicted[0].reason


def test_a_loading_replica_is_promoted_before_a_cold_start() -> None:
    snap = snapshot(
        [model("a")],
        [replace(prewarmed("pa", "a", [2]), state=ReplicaState.LOADING, progress=0.3)],
        demand={"a": 1.0},
    )
    plan = step(snap)
    assert [(type(a).__name__, a.replica_id) for a in plan.actions][:1] == [("Promote", "pa")]
    assert "loading replica" in plan.actions[0].reason


def test_a_cold_start_takes_the_idle_gpu_covered_by_the_lowest_score() -> None:
    snap = snapshot(
        [model("a"), model("b", 8), model("c", 2)],
        [
            serving("sb", "b", [0], 8),
            prewarmed("pb", "b", [1]),  # worth 8 s of cold start (rank 0 of b's demand)
            prewarmed("pc", "c", [2]),  # worth 2 s
            prewarmed("pc2", "c", [3]),  # surplus: worth 0
        ],
        forecasts={"b": (20, 20), "c": (12, 12)},
        demand={"a": 4.0, "b": 8.0, "c": 0.0},
    )
    plan = step(snap)
    cold = of(plan, ColdStart)
    assert [(c.worker, c.gpus) for c in cold] == [("w0", (3,))]
    assert "no prewarmed replica" in cold[0].reason
    assert [e.replica_id for e in of(plan, Evict)][:1] == ["pc2"]


def test_a_model_waiting_with_no_gpu_takes_one_from_a_model_with_spare_instances() -> None:
    snap = snapshot(
        [model("a"), model("b")],
        [serving(f"s{g}", "b", [g], 8, inflight=8 - g) for g in range(4)],
        demand={"a": 3.0, "b": 30},
    )
    plan = step(snap)
    (demoted,) = of(plan, Demote)  # the least busy of b's four instances
    assert demoted.replica_id == "s3" and "a has requests waiting" in demoted.reason
    (start,) = of(plan, ColdStart)
    assert start.model == "a" and start.gpus == (3,)


def test_a_wide_model_waiting_takes_a_whole_block_and_protected_instances_stay() -> None:
    replicas = [serving("b0", "b", [0], 8), serving("c1", "c", [1], 8)]
    replicas += [serving("b2", "b", [2], 8, inflight=5), serving("c3", "c", [3], 8, inflight=5)]
    snap = snapshot([model("w", tp=2), model("b"), model("c")], replicas, demand={"w": 1.0, "b": 9, "c": 9})
    plan = step(snap)  # the least busy block, each model keeping an instance
    assert sorted(a.replica_id for a in of(plan, Demote)) == ["b0", "c1"]
    assert [a.gpus for a in of(plan, ColdStart)] == [(0, 1)]
    plan = step(snap, ReactiveState(protected_until={"b0": 200.0}))
    assert sorted(a.replica_id for a in of(plan, Demote)) == ["b2", "c3"]
    assert [a.gpus for a in of(plan, ColdStart)] == [(2, 3)]


def test_taking_a_lenders_gpus_leaves_a_consistent_cluster() -> None:
    replicas = [serving("b0", "b", [0], 8, inflight=5), serving("c1", "c", [1], 8, inflight=5)]
    replicas += [serving("b2", "b", [2], 8, kv_lent_bytes=4 * GIB), serving("c3", "c", [3], 8)]
    replicas.append(prewarmed("d2", "d", [2], borrowed=True))  # in b2's lent KV space
    models = [model("w", tp=2), model("b"), model("c"), model("d")]
    snap = snapshot(models, replicas, demand={"w": 1.0, "b": 4, "c": 4})
    plan = step(snap)
    assert sorted(a.replica_id for a in of(plan, Demote)) == ["b2", "c3"]
    assert [a.gpus for a in of(plan, ColdStart)] == [(2, 3)]
    after = apply_plan(snap, plan)  # validated: no borrower is left without its lender
    assert "d2" not in {r.id for r in after.replicas}


def test_no_cold_start_when_every_gpu_serves_a_models_only_instance() -> None:
    snap = snapshot(
        [model("a"), model("b"), model("c")],
        [serving("sb", "b", [0], 8), serving("sc", "c", [1], 8)],
        demand={"a": 3.0, "b": 30, "c": 1},
        cluster=workers(1, 2),
    )
    plan = step(snap)
    assert not of(plan, ColdStart) and not of(plan, Promote) and not of(plan, Demote)


def test_a_model_waiting_takes_the_gpu_of_an_idle_models_only_instance_protected_or_not() -> None:
    # b is busy; c and d have nothing in flight but are held: c by its protection, d by the load of
    # the last scale-in window. a waits with no GPU: it takes an idle one, preferring the GPU that holds
    # its prewarmed replica (a promotion, no weight copy) over a cold start; a busy protected one never
    replicas = [serving("sb", "b", [0], 8, inflight=3), serving("sc", "c", [1], 8)]
    replicas += [serving("sd", "d", [2], 8, kv_lent_bytes=4 * GIB), prewarmed("pa", "a", [2], borrowed=True)]
    snap = snapshot(
        [model("a"), model("b"), model("c"), model("d")],
        replicas,
        demand={"a": 2.0, "b": 3.0},
        cluster=workers(1, 3),
    )
    held = ReactiveState(samples={"d": (1.0,) * 20}, protected_until={"sc": 200.0})
    plan = step(snap, held)
    assert [a.replica_id for a in of(plan, Demote)] == ["sd"]
    assert "a has requests waiting" in of(plan, Demote)[0].reason
    assert [a.replica_id for a in of(plan, Promote)] == ["pa"] and not of(plan, ColdStart)
    without = [r for r in replicas if r.id != "pa"]
    plan = step(replace(snap, replicas=tuple(without)), held)
    assert [a.replica_id for a in of(plan, Demote)] == ["sc"]
    assert [(a.model, a.gpus) for a in of(plan, ColdStart)] == [("a", (1,))]
    busy = [r for r in without if r.id != "sc"] + [serving("sc", "c", [1], 8, inflight=1)]
    everyone_held = ReactiveState(samples={"d": (9.0,) * 20}, protected_until={"sc": 200.0, "sd": 200.0})
    demand = {"a": 2.0, "b": 3.0, "c": 1.0, "d": 1.0}
    plan = step(
        snapshot(
            [model("a"), model("b"), model("c"), model("d")], busy, demand=demand, cluster=workers(1, 3)
        ),
        everyone_held,
    )
    assert not of(plan, Demote) and not of(plan, ColdStart)


def test_scale_out_follows_the_smoothed_load() -> None:
    # B = 8: 20 in flight needs ceil(20 / (0.8 x 8)) = 4 instances; one serves already
    snap = snapshot([model("a")], [serving("s", "a", [0], 8)], demand={"a": 20.0})
    plan = step(snap)
    assert len(of(plan, ColdStart)) == 3
    assert "smoothed load 20.00 > 0.8 x B=8 x 1 instances" in plan.actions[0].reason


def test_one_tick_spike_is_smoothed_over_the_window() -> None:
    quiet = snapshot([model("a")], [serving("s", "a", [0], 8)], demand={"a": 2.0})
    _, state = plan_step(quiet, ReactiveState())
    _, state = plan_step(quiet, state)
    _, state = plan_step(quiet, state)
    spike = replace(quiet, demand={"a": Demand(26.0)})  # window of 4: mean (2 + 2 + 2 + 26) / 4 = 8
    plan = step(spike, state)
    assert len(of(plan, ColdStart)) == 1  # ceil(8 / 6.4) = 2 instances, not ceil(26 / 6.4) = 5


def test_scale_in_demotes_the_least_loaded_unprotected_instance_and_keeps_weights() -> None:
    snap = snapshot(
        [model("a")],
        [
            serving("s0", "a", [0], 8, inflight=2),
            serving("s1", "a", [1], 8, inflight=0),
            serving("s2", "a", [2], 8, inflight=1),
        ],
        demand={"a": 3.0},
    )
    plan = step(snap)
    assert [a.replica_id for a in of(plan, Demote)] == ["s1", "s2"]  # 3 needs ceil(3 / 6.4) = 1 instance
    assert "keep its weights prewarmed" in of(plan, Demote)[0].reason
    after = apply_plan(snap, plan)
    assert {r.id: r.state for r in after.replicas}["s1"] is ReplicaState.PREWARMED
    protected = ReactiveState(protected_until={"s1": 103.0})
    assert [a.replica_id for a in of(step(snap, protected), Demote)] == ["s2", "s0"]


def test_min_and_max_instances_bound_the_autoscaler() -> None:
    snap = snapshot([model("a", min_instances=1), model("b", max_instances=2)], demand={"b": 50.0})
    plan = step(snap)
    assert sorted(c.model for c in of(plan, ColdStart)) == ["a", "b", "b"]
    assert "min_instances=1" in next(c.reason for c in of(plan, ColdStart) if c.model == "a")
    idle = apply_plan(snap, plan)
    assert "capped at max_instances=2" in next(c.reason for c in of(plan, ColdStart) if c.model == "b")
    demotes = of(step(replace(idle, demand={})), Demote)
    assert [d.model for d in demotes] == ["b", "b"]  # b scales in to zero, a stays at its minimum


def test_forecast_asks_for_foundation_and_burst_replicas_with_reasons() -> None:
    # B = 8, I = 1: nf = ceil(20/8) - 1 = 2, nb = ceil(37/8) - 1 - 2 = 2
    snap = snapshot(
        [model("a", 2)],
        [serving("s", "a", [0], 8, inflight=8)],  # busy: lends nothing
        cluster=workers(1, 8),
        forecasts={"a": (20, 37)},
        demand={"a": 5.0},
    )
    plan = step(snap)
    prewarms = of(plan, Prewarm)
    assert len(prewarms) == 4
    reasons = [p.reason for p in prewarms]
    assert sum("foundation replica" in r for r in reasons) == 2
    assert any("burst replica #3 of a: forecast peak 37 > 1 instances x B=8" in r for r in reasons)
    assert len({(p.worker, p.gpus) for p in prewarms}) == 4  # never two replicas of a on a GPU
    assert all(p.gpus != (0,) and not p.borrowed for p in prewarms)


def test_models_without_forecast_get_no_prewarmed_replica() -> None:
    snap = snapshot([model("a")], [serving("s", "a", [0], 8, inflight=8)], demand={"a": 5.0})
    assert not of(step(snap), Prewarm)


def test_a_higher_score_replica_evicts_lower_score_prewarmed_ones_and_says_so() -> None:
    # every GPU holds a 12 GiB replica of `low` (worth 12 s, cold start at 1 GiB/s);
    # `big` (12 GiB at 0.5 GiB/s: worth 24 s) needs one of them gone
    cluster = workers(1, 2)
    low = model("low", 12)
    big = model("big", 12, bandwidth_gib=0.5)
    snap = snapshot(
        [low, big],
        [prewarmed("l0", "low", [0]), prewarmed("l1", "low", [1], since=1.0)],
        cluster=cluster,
        forecasts={"low": (16, 16), "big": (8, 8)},
    )
    plan = step(snap)
    evicts, prewarms = of(plan, Evict), of(plan, Prewarm)
    assert [(e.replica_id, p.model) for e, p in zip(evicts, prewarms, strict=True)] == [("l1", "big")]
    assert "needs the room" in evicts[0].reason and "foundation replica #1 of big" in evicts[0].reason
    ablation = PlannerConfig(placement=replace(PlannerConfig().placement, evict_aware=False))
    assert step(snap, config=ablation).actions == ()


def test_an_idle_serving_replica_lends_its_spare_kv_and_takes_it_back_under_load() -> None:
    a, b = model("a", 4, min_instances=1), model("b", 2)
    idle = snapshot(
        [a, b],
        [serving("s", "a", [0], 12)],
        cluster=workers(1, 1),
        demand={"a": 0.0},
        forecasts={"b": (1, 1)},
    )
    plan = step(idle)
    lend = of(plan, LendKV)
    # keeps 10 % free, and one request's share of the KV space (12 GiB / B=8) as slack
    assert [x.lent_bytes for x in lend] == [int(12 * GIB * 0.9) // (2 << 20) * (2 << 20) - 12 * GIB // 8]
    prewarm = of(plan, Prewarm)
    assert prewarm and prewarm[0].borrowed and "lent KV space" in prewarm[0].reason
    lent = apply_plan(idle, plan)
    busy = replace(
        lent,
        replicas=tuple(
            replace(r, inflight=6, kv_used_bytes=8 * GIB) if r.id == "s" else r for r in lent.replicas
        ),
        demand={"a": Demand(6.0)},
    )
    plan = step(busy)
    reclaim = of(plan, ReclaimKV)
    assert reclaim and reclaim[0].lent_bytes < lend[0].lent_bytes
    assert [e.replica_id for e in of(plan, Evict)] == [prewarm[0].replica_id]
    assert "reclaims its KV space" in of(plan, Evict)[0].reason
    assert step(idle, config=PlannerConfig(kv_reservation=False)).actions == ()


def test_failed_replicas_and_prewarmed_ones_left_under_a_serving_replica_are_evicted() -> None:
    snap = snapshot(
        [model("a"), model("b")],
        [
            serving("s", "a", [0], 8, inflight=8),
            prewarmed("p", "b", [0]),
            replace(prewarmed("f", "b", [1]), state=ReplicaState.FAILED),
        ],
        demand={"a": 5.0},
    )
    plan = step(snap)
    reasons = {e.replica_id: e.reason for e in of(plan, Evict)}
    assert reasons.keys() == {"p", "f"}
    assert "failed" in reasons["f"] and "s serves on w0 GPU 0" in reasons["p"]


def test_tensor_parallel_replicas_stay_in_one_worker_on_aligned_gpus() -> None:
    cluster = (*workers(1, 2), *[replace(w, name="big") for w in workers(1, 8)])
    snap = snapshot([model("t", 16, tp=4)], cluster=cluster, forecasts={"t": (16, 16)})
    prewarms = of(step(snap), Prewarm)
    assert [(p.worker, p.gpus) for p in prewarms] == [("big", (0, 1, 2, 3)), ("big", (4, 5, 6, 7))]


def test_a_model_far_over_its_line_takes_a_gpu_from_a_quieter_models_spare_instance() -> None:
    # The soak benchmark after a fault: the busiest model on one instance at three times its line, a
    # quiet one holding two GPUs; before, the busy model waited for the quiet one's scale-in window.
    replicas = [serving("l0", "large", [0], 8, inflight=8), serving("m1", "mid", [1], 8, inflight=5)]
    replicas += [serving("s2", "small", [2], 8, inflight=3), serving("s3", "small", [3], 8, inflight=1)]
    models = [model("large"), model("mid"), model("small")]
    snap = snapshot(models, replicas, demand={"large": 24.5, "mid": 5.0, "small": 5.0})
    plan = step(snap)
    (demoted,) = of(plan, Demote)  # small's least busy instance; mid keeps its only one
    assert demoted.replica_id == "s3" and "large has more load than its instances hold" in demoted.reason
    (start,) = of(plan, ColdStart)
    assert start.model == "large" and start.gpus == (3,)
    # A model that would be over its own line (0.8 x B) on one instance keeps both: no thrash.
    busy = snapshot(models, replicas, demand={"large": 24.5, "mid": 5.0, "small": 7.0})
    assert not of(step(busy), Demote)
    # Nor is a GPU taken for a model over its line whose instances still hold its load (B = 8 each).
    near = snapshot(models, replicas, demand={"large": 7.5, "mid": 5.0, "small": 5.0})
    assert not of(step(near), Demote)
    # Nor while its instance is still loading (a worker started again): that capacity is on its way.
    loading = [replace(replicas[0], state=ReplicaState.LOADING), *replicas[1:]]
    reloading = snapshot(models, loading, demand={"large": 24.5, "mid": 5.0, "small": 5.0})
    assert not of(step(reloading), Demote)


def test_a_gpu_is_not_taken_from_a_model_whose_load_was_over_its_line_within_the_scale_in_window() -> None:
    """The soak benchmark after the SIGKILL of a worker: ``mid``, queued while its instance was down,
    took a GPU from ``large``, whose load was briefly low, and ``large`` took it back 3 s later. A giver
    is judged as scale-in judges it, by its highest smoothed load over the scale-in window."""
    replicas = [serving("l0", "large", [0], 8, inflight=2), serving("l1", "large", [1], 8, inflight=2)]
    replicas += [serving("m2", "mid", [2], 8, inflight=8), serving("s3", "small", [3], 8, inflight=1)]
    models = [model("large"), model("mid"), model("small")]
    snap = snapshot(models, replicas, demand={"large": 5.0, "mid": 12.0, "small": 1.0})
    # 10 s ago large ran at 14 (two instances' worth), in the last 2 s at 5 (one instance holds it, under
    # the line of 0.8 x B = 6.4, but too much to scale in by itself); mid and small steady.
    history = {"large": (14.0,) * 20 + (5.0,) * 3, "mid": (12.0,) * 23, "small": (1.0,) * 23}
    assert not of(step(snap, ReactiveState(history)), Demote)
    # Once large stayed low for the whole window, its spare instance goes to mid.
    quiet = {**history, "large": (5.0,) * 23}
    (demoted,) = of(step(snap, ReactiveState(quiet)), Demote)
    assert demoted.model == "large" and "mid has more load than its instances hold" in demoted.reason
