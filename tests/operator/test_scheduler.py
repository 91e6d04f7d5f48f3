"""The scheduler over observations: orders remembered, pending replicas not placed twice, steady state."""

from __future__ import annotations

from collections.abc import Mapping

from warmserve.operator.autoscaler import AutoscalerState
from warmserve.operator.planner import plan_step
from warmserve.operator.scheduler import Observation, Scheduler
from warmserve.operator.snapshot import Demand, Forecast, ModelConfig
from warmserve.worker.protocol import (
    DesiredState,
    GpuUsage,
    ModelSpec,
    ObservedReplica,
    ObservedState,
    ReplicaState,
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
    scheduler = Scheduler(MODELS, plan_step, AutoscalerState(), Fixed({"a": Forecast(mean=6.0, peak=6.0)}))
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
    scheduler = Scheduler(MODELS, plan_step, AutoscalerState(), Fixed({"a": Forecast(mean=6.0, peak=6.0)}))
    ordered = scheduler.tick(Observation(now=0.0, workers={"w0": worker("w0")})).desired["w0"]
    observed = {"w0": worker("w0", as_observed(ordered, ReplicaState.PREWARMED))}
    decision = scheduler.tick(
        Observation(now=1.0, workers=observed, demand={"a": Demand(inflight=0.0, queued=3)})
    )
    replicas = decision.desired["w0"].replicas
    assert [(r.id, r.role.value) for r in replicas] == [(ordered.replicas[0].id, "serve")]


def test_a_bad_observation_holds_steady_and_says_why() -> None:
    scheduler = Scheduler(MODELS, plan_step, AutoscalerState())
    stray = ObservedReplica(id="x", model="a", gpus=(5,), state=ReplicaState.PREWARMED, since=0.0)
    decision = scheduler.tick(Observation(now=0.0, workers={"w0": worker("w0", (stray,))}))
    assert decision.desired == {}
    assert "gpus" in scheduler.last_error
