"""The operator's Prometheus metrics, counted from the ticks of a real scheduler fed observations: plan
actions by type, prewarm hits, cold starts and their ratio, skipped ticks by reason, workers left out, tick
duration; the forecast-error hook the forecast source calls; handler runs and failures by kind; and the
exposition passing ``promtool check metrics`` (docs/operator.md, "Metrics")."""

from __future__ import annotations

import math

import pytest
from prometheus_client import generate_latest

from tests.operator.test_scheduler import MODELS, Fixed, as_observed, worker
from tests.promtool import assert_promtool_passes, needs_promtool
from warmserve.operator.kube.metrics import OperatorMetrics
from warmserve.operator.planning.planner import plan_step
from warmserve.operator.planning.reactive import ReactiveState
from warmserve.operator.planning.snapshot import Demand, Forecast
from warmserve.operator.ports import Observation
from warmserve.operator.scheduler import Decision, Scheduler, Tick
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import ObservedReplica, ReplicaState


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float:
    sample = metrics.registry.get_sample_value(f"warmserve_operator_{name}", labels)
    assert sample is not None, f"no sample {name} {labels}"
    return sample


def counted_run(metrics: OperatorMetrics) -> None:
    """Prewarm ``a`` from its forecast, promote it on demand (a hit), then cold-start ``b`` (a miss)."""
    scheduler = Scheduler(MODELS, plan_step, ReactiveState(), Fixed({"a": Forecast(mean=6.0, peak=6.0)}))

    def tick(observation: Observation) -> Decision:
        decision = scheduler.tick(observation)
        metrics.count_tick(Tick(observation, decision, duration_s=0.02))
        return decision

    ordered = tick(Observation(now=0.0, workers={"w0": worker("w0")})).desired["w0"]
    prewarmed = {"w0": worker("w0", as_observed(ordered, ReplicaState.PREWARMED))}
    tick(Observation(now=1.0, workers=prewarmed, demand={"a": Demand(inflight=0.0, queued=3)}))
    tick(Observation(now=2.0, workers=prewarmed, demand={"b": Demand(inflight=0.0, queued=3)}))


def test_a_run_counts_actions_hits_cold_starts_their_ratio_and_tick_durations() -> None:
    metrics = OperatorMetrics()
    counted_run(metrics)
    assert value(metrics, "plan_actions_total", action="prewarm") >= 1
    assert value(metrics, "plan_actions_total", action="promote") == 1
    assert value(metrics, "prewarm_hits_total", model="a") == 1
    assert value(metrics, "cold_starts_total", model="b") == 1
    assert value(metrics, "prewarm_hit_ratio") == 0.5
    assert value(metrics, "ticks_total") == 3
    assert value(metrics, "tick_duration_seconds_count") == 3
    assert math.isclose(value(metrics, "tick_duration_seconds_sum"), 0.06)
    assert value(metrics, "tick_duration_seconds_bucket", le="0.025") == 3
    assert value(metrics, "ticks_skipped_total", reason="unavailable") == 0
    assert value(metrics, "plan_actions_total", action="reclaim_kv") == 0  # every type shows from the start


def test_skipped_ticks_count_by_reason_and_left_out_workers_show() -> None:
    metrics = OperatorMetrics()
    metrics.count_tick(Tick(None, None, skipped="cannot list the worker Pods"))
    scheduler = Scheduler(MODELS, plan_step, ReactiveState())
    stray = ObservedReplica(id="x", model="a", gpus=(5,), state=ReplicaState.PREWARMED, since=0.0)
    held = Observation(now=0.0, workers={"w0": worker("w0", (stray,))})
    metrics.count_tick(Tick(held, scheduler.tick(held)))
    odd = ObservedReplica(
        id="a-0", model="a", gpus=(0,), state=ReplicaState.SERVING, since=0.0, borrowed=True
    )
    split = Observation(now=1.0, workers={"w0": worker("w0", (odd,)), "w1": worker("w1")})
    metrics.count_tick(Tick(split, scheduler.tick(split)))
    assert value(metrics, "ticks_skipped_total", reason="unavailable") == 1
    assert value(metrics, "ticks_skipped_total", reason="held") == 1
    assert value(metrics, "workers_excluded") == 1


def test_the_forecast_source_sets_each_models_peak_error_and_a_bad_value_names_its_field() -> None:
    metrics = OperatorMetrics()
    metrics.record_forecast_error("a", forecast_peak=3.0, actual_peak=5.0)
    metrics.record_forecast_error("b", forecast_peak=4.0, actual_peak=1.5)
    assert value(metrics, "forecast_peak_error_requests", model="a") == 2.0
    assert value(metrics, "forecast_peak_error_requests", model="b") == 2.5
    assert value(metrics, "forecast_peak_requests", model="b") == 4.0
    assert value(metrics, "actual_peak_requests", model="b") == 1.5
    with pytest.raises(InvalidFieldError, match="actual_peak"):
        metrics.record_forecast_error("a", forecast_peak=3.0, actual_peak=math.nan)
    metrics.forget_model("b")
    metrics.forget_model("never-seen")
    for name in ("forecast_peak_error_requests", "forecast_peak_requests", "actual_peak_requests"):
        assert metrics.registry.get_sample_value(f"warmserve_operator_{name}", {"model": "b"}) is None


async def test_handler_runs_are_counted_by_kind_and_a_failure_is_counted_and_raised() -> None:
    metrics = OperatorMetrics()

    async def fine(**_: object) -> None:
        return None

    async def broken(**_: object) -> None:
        raise RuntimeError("refused")

    await metrics.counted("WorkerPool", fine)(body={})
    with pytest.raises(RuntimeError, match="refused"):
        await metrics.counted("ModelDeployment", broken)(body={})
    assert value(metrics, "reconciles_total", kind="WorkerPool") == 1
    assert value(metrics, "reconciles_total", kind="ModelDeployment") == 1
    assert value(metrics, "errors_total", kind="ModelDeployment") == 1
    assert (
        metrics.registry.get_sample_value("warmserve_operator_errors_total", {"kind": "WorkerPool"}) is None
    )


@needs_promtool
def test_the_exposition_passes_promtool() -> None:
    metrics = OperatorMetrics()
    counted_run(metrics)
    metrics.record_forecast_error("a", forecast_peak=3.0, actual_peak=5.0)
    text = generate_latest(metrics.registry)
    assert_promtool_passes(text)
    assert b"warmserve_operator_prewarm_hits_total" in text
