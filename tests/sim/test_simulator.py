"""Whole simulated runs on a small rate trace: every policy runs the real scheduler (or its static
layout), results are deterministic for a seed, the figures hold together, and bad input is named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from warmserve.operator.planning import prewarm_scores as demand
from warmserve.operator.planning.snapshot import Snapshot
from warmserve.protocol.errors import InvalidFieldError
from warmserve.sim.catalog import ClusterSpec
from warmserve.sim.plot import figure
from warmserve.sim.results import KEYS, summarize
from warmserve.sim.scenario import Scenario, check_policies, max_rate_at_slo, prepare, run_policy
from warmserve.sim.simulator import Simulation
from warmserve.sim.workload import WorkloadSpec


def small(trace: Path, **workload: object) -> Scenario:
    spec = WorkloadSpec(
        trace, models=3, mean_rate_rps=3.0, day=1, offset_s=3000.0, duration_s=600.0, **workload
    )  # type: ignore[arg-type]
    return Scenario(
        spec, ClusterSpec(nodes=1, gpus_per_node=4), shapes=("llama2-7b", "llama3-8b"), max_concurrency=8
    )


@pytest.mark.parametrize(
    "policy", ["warmserve", "autoscale", "muxserve", "dedicated", "oracle", "no-forecast"]
)
def test_every_policy_serves_the_workload(rate_trace: Path, policy: str) -> None:
    scenario = small(rate_trace)
    workload, models = prepare(scenario)
    figures = summarize(run_policy(scenario, workload, models, policy))
    assert set(figures) == {*KEYS, "scheduler_held_ticks", "scheduler_excluded_ticks"}
    assert figures["requests"] == workload.requests > 500
    assert figures["completed"] + figures["dropped"] == figures["requests"]
    assert figures["completed"] > 0.9 * figures["requests"]
    assert 0 < figures["gpu_busy_s"] <= 4 * (600 + scenario.sim.grace_s)
    if policy == "muxserve":
        assert figures["cold_starts"] == 0
    else:
        assert figures["cold_starts"] >= 1


def test_a_run_is_deterministic_for_a_seed(rate_trace: Path) -> None:
    scenario = small(rate_trace)
    workload, models = prepare(scenario)
    a = run_policy(scenario, workload, models, "warmserve")
    b = run_policy(scenario, *prepare(scenario), "warmserve")
    assert np.array_equal(a.first_token, b.first_token, equal_nan=True)
    assert summarize(a) == summarize(b)
    other, _ = prepare(replace(scenario, workload=replace(scenario.workload, seed=1)))
    assert not np.array_equal(other.arrival[:50], workload.arrival[:50])


def test_the_planning_shortcuts_change_no_result(rate_trace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three per-tick shortcuts are exact: apply_plan re-checks only what a plan changed
    (Snapshot.with_replicas), the scheduler's next snapshot only what changed since the last one
    (Snapshot.revise), and replica demands are cached. With all replaced by the full paths (every
    snapshot built and validated whole, every demand computed), a run is the same."""
    scenario = small(rate_trace)
    workload, models = prepare(scenario)
    fast = run_policy(scenario, workload, models, "warmserve")
    monkeypatch.setattr(
        Snapshot, "with_replicas", lambda snap, replicas: replace(snap, replicas=tuple(replicas))
    )
    monkeypatch.setattr(
        Snapshot,
        "revise",
        lambda snap, now, workers, replicas, forecasts, demand: Snapshot(
            now, workers, snap.models, replicas, forecasts, demand
        ),
    )
    monkeypatch.setattr(demand, "_replica_demand", demand._replica_demand.__wrapped__)
    full = run_policy(scenario, workload, models, "warmserve")
    assert fast.ticks_run == full.ticks_run > 0
    for field in ("first_token", "finish", "output"):
        assert np.array_equal(getattr(fast, field), getattr(full, field), equal_nan=True), field
    assert (fast.cold_starts, fast.prewarm_hits) == (full.cold_starts, full.prewarm_hits)
    for model, rows in fast.timeline.items():
        assert np.array_equal(rows, full.timeline[model], equal_nan=True), model
    assert fast.prewarm_hits > 0  # the prewarm phase, where demands are scored, did run


def test_forecasts_make_warmserve_prewarm_and_hit(rate_trace: Path) -> None:
    scenario = small(rate_trace)
    workload, models = prepare(scenario)
    warm = summarize(run_policy(scenario, workload, models, "warmserve"))
    auto = summarize(run_policy(scenario, workload, models, "autoscale"))
    assert warm["prewarm_hits"] > 0 and auto["prewarm_hits"] == 0


def test_the_rate_multiplier_scales_the_requests(rate_trace: Path) -> None:
    base, _ = prepare(small(rate_trace))
    double, _ = prepare(small(rate_trace, rate_multiplier=2.0))
    assert 1.7 < double.requests / base.requests < 2.3


def test_unknown_policy_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(InvalidFieldError, match="autoscale"):
        check_policies(["warmserve", "serverless"])


def test_a_model_wider_than_a_node_is_refused(rate_trace: Path) -> None:
    scenario = replace(small(rate_trace), shapes=("llama2-70b:8",))
    with pytest.raises(InvalidFieldError, match="tensor parallelism"):
        prepare(scenario)


def test_unknown_shape_and_profile_are_named() -> None:
    with pytest.raises(InvalidFieldError, match="llama2-7b"):
        prepare(Scenario(WorkloadSpec(Path("/nonexistent")), shapes=("gpt-5",)))
    with pytest.raises(InvalidFieldError, match="h100"):
        ClusterSpec(profile="tpu")


def test_an_empty_trace_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("t_sec,model,rate_rps,cv\n")
    with pytest.raises(InvalidFieldError):
        prepare(Scenario(WorkloadSpec(empty, models=1, day=0)))


def test_a_replay_past_the_trace_is_refused(rate_trace: Path) -> None:
    with pytest.raises(InvalidFieldError, match="day"):
        prepare(Scenario(WorkloadSpec(rate_trace, models=3, day=5)))


def test_the_timeline_follows_every_model_and_the_plot_draws_each(rate_trace: Path) -> None:
    scenario = small(rate_trace)
    workload, models = prepare(scenario)
    run = Simulation(workload, scenario.cluster, models, "oracle", scenario.sim).run()
    assert set(run.timeline) == set(workload.models) == {"model-00", "model-01", "model-02"}
    for rows in run.timeline.values():
        assert rows.shape[1] == 6 and len(rows) >= 10  # 600 s sampled every 60 s
        assert np.all(rows[:, 2] <= rows[:, 3])  # forecast mean <= peak
    assert sum(rows[:, 5].max() for rows in run.timeline.values()) >= 3  # each model had a serving replica
    fig = figure({"oracle": run})
    titles = {a.get_title(): [line.get_label() for line in a.get_lines()] for a in fig.axes[1:]}
    assert set(titles) == {f"{m} under oracle" for m in workload.models}
    assert all("load (in flight + queued)" in labels for labels in titles.values())
    plt.close(fig)


def test_the_timeline_samples_are_bounded_on_a_long_run(rate_trace: Path) -> None:
    """A run's timeline holds at most ``timeline_points`` samples per model, however long the run."""
    scenario = small(rate_trace)
    scenario = replace(scenario, sim=replace(scenario.sim, timeline_points=4))
    workload, models = prepare(scenario)
    run = Simulation(workload, scenario.cluster, models, "oracle", scenario.sim).run()
    for rows in run.timeline.values():
        assert 2 <= len(rows) <= 4  # (600 s + grace) / 4 apart, instead of every 60 s


def test_the_sweep_finds_a_rate_the_policy_serves_within_its_slo(rate_trace: Path) -> None:
    scenario = small(rate_trace)
    scenario = replace(scenario, workload=replace(scenario.workload, duration_s=300.0))
    rate = max_rate_at_slo(scenario, "muxserve", target=0.9, steps=2)
    assert rate > 0
    at = replace(scenario.workload, rate_multiplier=rate / scenario.workload.rate_rps)
    workload, models = prepare(replace(scenario, workload=at))
    assert summarize(run_policy(scenario, workload, models, "muxserve"))["slo_attainment"] >= 0.9


def test_a_warm_up_is_replayed_but_not_measured(rate_trace: Path) -> None:
    scenario = small(rate_trace, warmup_s=1200.0)
    workload, models = prepare(scenario)
    assert workload.measured_from_s == 1200.0 and workload.duration_s == 1800.0
    warm = workload.arrival < 1200.0
    assert warm.any() and workload.arrival.max() < 1800.0
    # rates are scaled over the measured span: its mean is the asked-for 3 requests/s
    assert 0.8 * 3.0 * 600 < (~warm).sum() < 1.2 * 3.0 * 600
    run = run_policy(scenario, workload, models, "warmserve")
    assert np.isfinite(run.first_token[warm]).any()  # the warm-up's requests were served
    figures = summarize(run)
    assert figures["requests"] == int((~warm).sum())
    assert figures["completed"] + figures["dropped"] == figures["requests"]


def test_a_warm_up_before_the_trace_is_refused(rate_trace: Path) -> None:
    with pytest.raises(InvalidFieldError, match="warmup"):
        prepare(Scenario(WorkloadSpec(rate_trace, models=3, day=0, offset_s=0.0, warmup_s=600.0)))
    with pytest.raises(InvalidFieldError, match="warmup"):
        WorkloadSpec(rate_trace, warmup_s=-1.0)


def test_progress_ends_at_the_whole_replay(rate_trace: Path) -> None:
    """A progress bar fed by the run reaches 100%: the last report is the replay's length, even when the
    last event falls earlier (it used to stop at the last 600 s step)."""
    scenario = small(rate_trace)
    workload, models = prepare(scenario)
    seen: list[float] = []
    run_policy(scenario, workload, models, "muxserve", seen.append)
    assert seen[-1] == workload.duration_s and seen == sorted(seen)
