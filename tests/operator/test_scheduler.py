"""The scheduler over observations: orders remembered, pending replicas not placed twice, steady state."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import replace
from functools import partial

import pytest

from warmserve.operator.planning.plan import Plan
from warmserve.operator.planning.planner import PlannerConfig, plan_step
from warmserve.operator.planning.prewarm_scores import ScoreConfig, rank_score, replica_demand
from warmserve.operator.planning.reactive import ReactiveState
from warmserve.operator.planning.snapshot import Demand, Forecast, ModelConfig
from warmserve.operator.policies.registry import policy_by_name
from warmserve.operator.policies.warmserve import CONFIGS
from warmserve.operator.ports import Observation
from warmserve.operator.scheduler import Scheduler, Tick, build_snapshot, run
from warmserve.protocol.state import (
    DesiredReplica,
    DesiredState,
    GpuUsage,
    ModelSpec,
    ObservedReplica,
    ObservedState,
    ReplicaState,
    Role,
)

GIB = 2**30
MODELS = {
    m: ModelConfig(
        spec=ModelSpec(name=m, weights=f"/cache/{m}", weight_bytes=16 * GIB, max_concurrency=8),
        load_bandwidth_bytes_per_s=2 * GIB,
    )
    for m in ("a", "b")
}


class Fixed:
    """A forecast source that always forecasts the same load."""

    def __init__(self, forecasts: Mapping[str, Forecast]) -> None:
        self.values = dict(forecasts)

    def observe(self, now: float, demand: Mapping[str, Demand]) -> None:
        return None

    def forecasts(self, now: float) -> Mapping[str, Forecast]:
        return self.values


def worker(name: str, replicas: tuple[ObservedReplica, ...] = ()) -> ObservedState:
    used = sum(16 * GIB for _ in replicas)
    gpus = tuple(
        GpuUsage(index=i, capacity_bytes=80 * GIB, used_bytes=used if i == 0 else 0) for i in range(2)
    )
    return ObservedState(worker=name, observed_generation=0, ready=True, gpus=gpus, replicas=replicas)


def as_observed(desired: DesiredState, state: ReplicaState) -> tuple[ObservedReplica, ...]:
    return tuple(
        ObservedReplica(id=r.id, model=r.model, gpus=r.gpus, state=state, since=0.0) for r in desired.replicas
    )


def test_forecast_prewarms_once_and_a_pending_order_is_not_placed_again() -> None:
    scheduler = Scheduler(MODELS, plan_step, ReactiveState(), Fixed({"a": Forecast(mean=6.0, peak=6.0)}))
    first = scheduler.tick(Observation(now=0.0, workers={"w0": worker("w0")}))
    assert set(first.desired) == {"w0"}
    ordered = first.desired["w0"]
    assert [r.model for r in ordered.replicas] == ["a"]
    assert "a" in first.plan.describe()

    # The worker has not reported the new replica yet: the scheduler counts it as loading, orders nothing new.
    again = scheduler.tick(Observation(now=0.5, workers={"w0": worker("w0")}))
    assert again.desired == {}
    # Once the worker reports it prewarmed, still nothing to change: the plan is a fixed point.
    settled = scheduler.tick(
        Observation(now=1.0, workers={"w0": worker("w0", as_observed(ordered, ReplicaState.PREWARMED))})
    )
    assert settled.desired == {}
    assert scheduler.generation == 1


def test_demand_promotes_the_prewarmed_replica_instead_of_loading_another() -> None:
    scheduler = Scheduler(MODELS, plan_step, ReactiveState(), Fixed({"a": Forecast(mean=6.0, peak=6.0)}))
    ordered = scheduler.tick(Observation(now=0.0, workers={"w0": worker("w0")})).desired["w0"]
    observed = {"w0": worker("w0", as_observed(ordered, ReplicaState.PREWARMED))}
    decision = scheduler.tick(
        Observation(now=1.0, workers=observed, demand={"a": Demand(inflight=0.0, queued=3)})
    )
    replicas = decision.desired["w0"].replicas
    assert [(r.id, r.role.value) for r in replicas] == [(ordered.replicas[0].id, "serve")]


def test_an_order_in_lent_space_counts_as_borrowed_before_the_worker_reports_it() -> None:
    # a serving "a" on GPU 0 ordered to lend 40 GiB, and a prewarm of "b" ordered beside it, not yet reported
    serve = DesiredReplica("a-0", "a", (0,), Role.SERVE, kv_lend_bytes=40 * GIB)
    guest = DesiredReplica("b-0", "b", (0,), Role.PREWARM)
    apart = DesiredReplica("b-1", "b", (1,), Role.PREWARM)
    ordered = DesiredState("w0", 1, {m: c.spec for m, c in MODELS.items()}, (serve, guest, apart))
    report = ObservedReplica(
        id="a-0", model="a", gpus=(0,), state=ReplicaState.SERVING, since=0.0, kv_total_bytes=64 * GIB
    )
    snap = build_snapshot(
        Observation(now=1.0, workers={"w0": worker("w0", (report,))}), MODELS, {"w0": ordered}, {}
    )
    flags = {r.id: r.borrowed for r in snap.replicas}
    assert flags == {"a-0": False, "b-0": True, "b-1": False}  # as the worker flags them when it loads


def test_models_declared_at_run_time_are_planned_and_removed_ones_released() -> None:
    only_a = {"a": MODELS["a"]}
    forecasts = Fixed({"a": Forecast(mean=6.0, peak=6.0), "b": Forecast(mean=6.0, peak=6.0)})
    scheduler = Scheduler(only_a, plan_step, ReactiveState(), forecasts)
    first = scheduler.tick(Observation(now=0.0, workers={"w0": worker("w0")})).desired["w0"]
    assert [r.model for r in first.replicas] == ["a"]  # "b" is forecast but not declared

    scheduler.set_models(MODELS)  # a ModelDeployment for "b" appears
    observed = {"w0": worker("w0", as_observed(first, ReplicaState.PREWARMED))}
    added = scheduler.tick(Observation(now=1.0, workers=observed)).desired["w0"]
    assert sorted(r.model for r in added.replicas) == ["a", "b"]
    assert set(added.models) == {"a", "b"}

    scheduler.set_models({"b": MODELS["b"]})  # the one for "a" is deleted
    observed = {"w0": worker("w0", as_observed(added, ReplicaState.PREWARMED))}
    removed = scheduler.tick(Observation(now=2.0, workers=observed)).desired["w0"]
    assert [r.model for r in removed.replicas] == ["b"]
    assert set(removed.models) == {"b"}


def test_priorities_are_written_with_the_scoring_rule_the_policy_plans_with() -> None:
    # no mean load but a peak of two instances: two burst replicas, scored peak / max(mean, floor)
    forecasts = Fixed({"a": Forecast(mean=0.0, peak=16.0)})
    scores = ScoreConfig(burst_mean_floor=4.0)
    step = partial(plan_step, config=PlannerConfig(scores=scores))
    scheduler = Scheduler({"a": MODELS["a"]}, step, ReactiveState(), forecasts, scores)
    written = scheduler.tick(Observation(now=0.0, workers={"w0": worker("w0")})).desired["w0"]
    demand = replica_demand(MODELS["a"], 0.0, 16.0, 0)
    expected = [rank_score(MODELS["a"], demand, rank, scores) for rank in range(2)]
    assert [r.priority for r in written.replicas] == pytest.approx(expected)
    assert expected[0] != rank_score(MODELS["a"], demand, 0, ScoreConfig())  # the default would differ


def test_the_registry_gives_each_policy_the_scoring_rule_it_plans_with() -> None:
    for name, config in CONFIGS.items():
        assert policy_by_name(name).scores is config.scores


def test_a_bad_observation_holds_steady_and_says_why() -> None:
    scheduler = Scheduler(MODELS, plan_step, ReactiveState())
    stray = ObservedReplica(id="x", model="a", gpus=(5,), state=ReplicaState.PREWARMED, since=0.0)
    decision = scheduler.tick(Observation(now=0.0, workers={"w0": worker("w0", (stray,))}))
    assert decision.desired == {}
    assert "gpus" in scheduler.last_error


def test_a_worker_whose_report_is_refused_is_left_out_and_the_rest_is_planned() -> None:
    """A refused report must not freeze the cluster: the tick plans the other workers and names the one
    it left out (a serving replica flagged borrowed is what froze every tick before)."""
    scheduler = Scheduler(MODELS, plan_step, ReactiveState())
    odd = ObservedReplica(
        id="a-0", model="a", gpus=(0,), state=ReplicaState.SERVING, since=0.0, borrowed=True
    )
    demand = {"b": Demand(inflight=4.0, queued=4)}
    observation = Observation(
        now=0.0, workers={"w0": worker("w0", (odd,)), "w1": worker("w1")}, demand=demand
    )
    decision = scheduler.tick(observation)
    assert set(scheduler.excluded) == {"w0"} and "borrowed" in scheduler.excluded["w0"]
    assert scheduler.last_error == ""
    assert set(decision.desired) == {"w1"}
    assert any(r.model == "b" for r in decision.desired["w1"].replicas)


def test_a_worker_at_a_higher_generation_gets_the_next_write_above_it() -> None:
    """One PUT with a huge generation (or a restarted scheduler counting from 0) must not lock the
    scheduler out: workers refuse every generation under the one they applied."""
    scheduler = Scheduler(MODELS, plan_step, ReactiveState(), Fixed({"a": Forecast(mean=4.0, peak=8.0)}))
    first = scheduler.tick(Observation(now=0.0, workers={"w0": worker("w0")}))
    ours = first.desired["w0"]
    report = as_observed(ours, ReplicaState.PREWARMED)
    ahead = replace(worker("w0", report), observed_generation=1_000_000_000)
    again = scheduler.tick(Observation(now=1.0, workers={"w0": ahead}))
    assert again.desired["w0"].generation > 1_000_000_000
    assert {r.id for r in again.desired["w0"].replicas} == {r.id for r in ours.replicas}


class SlowCluster:
    """Observing takes ``observe_s`` (as HTTP to busy workers does); records when each tick began."""

    def __init__(self, observe_s: float) -> None:
        self.observe_s = observe_s
        self.started: list[float] = []

    async def observe(self) -> Observation:
        loop = asyncio.get_running_loop()
        self.started.append(loop.time())
        await asyncio.sleep(self.observe_s)
        return Observation(now=len(self.started), workers={})

    async def apply(self, desired: Mapping[str, DesiredState]) -> set[str]:
        return set()


async def test_ticks_keep_their_period_however_long_observing_takes() -> None:
    cluster = SlowCluster(observe_s=0.06)
    scheduler = Scheduler({}, lambda snapshot, state: (Plan(), state), None)
    loop = asyncio.create_task(run(cluster, scheduler, 0.1))
    await asyncio.sleep(0.75)
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    gaps = [b - a for a, b in itertools.pairwise(cluster.started)]
    assert len(gaps) >= 5
    assert 0.095 < sum(gaps) / len(gaps) < 0.13  # not 0.1 + 0.06 (the margin is for a busy machine)


async def test_each_tick_reports_how_long_it_took() -> None:
    cluster = SlowCluster(observe_s=0.05)
    scheduler = Scheduler({}, lambda snapshot, state: (Plan(), state), None)
    ticks: list[Tick] = []
    loop = asyncio.create_task(run(cluster, scheduler, 0.1, ticks.append))
    await asyncio.sleep(0.35)
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    assert len(ticks) >= 2
    assert all(0.05 <= t.duration_s < 0.1 for t in ticks)  # the observation, not the wait for the next slot


def test_the_snapshot_of_the_last_planned_tick_is_kept_for_status() -> None:
    scheduler = Scheduler(MODELS, plan_step, ReactiveState(), Fixed({"a": Forecast(mean=6.0, peak=6.0)}))
    assert scheduler.snapshot is None
    ordered = scheduler.tick(Observation(now=0.0, workers={"w0": worker("w0")})).desired["w0"]
    scheduler.tick(
        Observation(now=1.0, workers={"w0": worker("w0", as_observed(ordered, ReplicaState.PREWARMED))})
    )
    snapshot = scheduler.snapshot
    assert snapshot is not None and snapshot.now == 1.0
    assert [(r.model, r.state) for r in snapshot.replicas] == [("a", ReplicaState.PREWARMED)]
    assert snapshot.forecasts["a"] == Forecast(mean=6.0, peak=6.0)
