"""A per-request log's own past as the forecast's history: its arrivals binned per window are the rate
history, the days before the replay train the online forecast, the oracle knows the replay, the baselines
are sized from the same series, and a log with less than a day before the replay still says so."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from warmserve.operator.forecast.concurrency import SECONDS_PER_DAY
from warmserve.replay.forecasts import ForecastMode, history_notes
from warmserve.sim.catalog import ClusterSpec
from warmserve.sim.scenario import Scenario, prepare, run_policy
from warmserve.sim.simulator import latency_models, sizing, trace_forecast
from warmserve.sim.workload import HISTORY_WINDOW_SEC, WorkloadSpec, build_workload

#: model -> its busy hour of every day (a quiet trickle the rest of the day)
BUSY = {"morning-7b": 8, "noon-7b": 10, "afternoon-7b": 12}
#: The replay: 07:00 to 13:00 of the third day (two days of history before it).
OFFSET_S, DURATION_S = 7 * 3600.0, 6 * 3600.0


def _daily_log(path: Path, days: int) -> Path:
    """``days`` days of :data:`BUSY`: 0.4 requests/s in a model's busy hour, one every ~10 minutes else."""
    rng = np.random.default_rng(3)
    rows = ["timestamp,model,input_tokens,output_tokens"]
    for name, hour in BUSY.items():
        for h in range(24 * days):
            rate = 0.4 if h % 24 == hour else 0.0015
            times = 3600.0 * h + np.sort(rng.uniform(0, 3600.0, rng.poisson(rate * 3600.0)))
            rows += [f"{t:.3f},{name},{rng.integers(100, 400)},{rng.integers(50, 200)}" for t in times]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_the_log_binned_per_window_is_the_history_and_the_oracle_knows_the_replay(tmp_path: Path) -> None:
    spec = WorkloadSpec(_daily_log(tmp_path / "log.csv", 3), day=2, offset_s=OFFSET_S, duration_s=DURATION_S)
    workload = build_workload(spec)
    assert {s.model for s in workload.history} == set(BUSY) == set(workload.models)
    for index, series in enumerate(workload.history):
        first = round((workload.replay_start_s - series.start_sec) / series.window_sec)
        assert series.window_sec == HISTORY_WINDOW_SEC and first >= SECONDS_PER_DAY / HISTORY_WINDOW_SEC
        last = first + math.ceil(workload.duration_s * workload.time_scale / series.window_sec)
        replayed = series.rate_rps[first:last] * series.window_sec  # the replay's windows: its own requests
        assert round(replayed.sum()) == np.count_nonzero(workload.model == index)
    assert history_notes(workload.history, workload.replay_start_s, workload.models) == {}


def test_a_log_without_a_model_column_has_the_history_of_its_synthetic_models(tmp_path: Path) -> None:
    """Each request of the whole log is given its synthetic model once, so history and replay agree."""
    log = _daily_log(tmp_path / "log.csv", 3)
    lines = log.read_text().splitlines()
    log.write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != 1) for line in lines))
    workload = build_workload(WorkloadSpec(log, models=2, day=2, offset_s=OFFSET_S, duration_s=DURATION_S))
    assert workload.kind == "requests" and [s.model for s in workload.history] == list(workload.models)
    for index, series in enumerate(workload.history):
        first = round((workload.replay_start_s - series.start_sec) / series.window_sec)
        last = first + math.ceil(workload.duration_s * workload.time_scale / series.window_sec)
        assert round(series.rate_rps[first:last].sum() * series.window_sec) == np.sum(workload.model == index)
        assert first * series.window_sec >= SECONDS_PER_DAY


def test_warmserve_and_the_oracle_forecast_a_log_and_differ_from_no_forecast(tmp_path: Path) -> None:
    """One GPU for three models busy one after the other: with the log's own past the forecast sees each
    busy hour coming (the day before had it), which a run without forecast cannot."""
    spec = WorkloadSpec(_daily_log(tmp_path / "log.csv", 3), day=2, offset_s=OFFSET_S, duration_s=DURATION_S)
    scenario = Scenario(spec, ClusterSpec(nodes=1, gpus_per_node=1))
    workload, models = prepare(scenario)
    latency = latency_models(models, scenario.cluster, workload)
    horizon = scenario.sim.horizon_s
    for mode in (ForecastMode.ORACLE, ForecastMode.ONE_STEP):
        source = trace_forecast(workload, latency, mode, horizon)
        for model, hour in BUSY.items():  # an hour into the replay's busy hour, its forecast is the higher
            busy = source.forecasts((hour - 7) * 3600.0 + 1800.0 + workload.measured_from_s)[model]
            quiet = source.forecasts((hour - 7) * 3600.0 - 1800.0 + workload.measured_from_s)[model]
            assert busy.peak > 2 * quiet.peak, (mode, model)
    oracle = trace_forecast(workload, latency, ForecastMode.ORACLE, horizon)
    sized = sizing(oracle, workload, latency)
    for model, (mean, peak) in oracle.table.items():  # the baselines are sized from the oracle's series
        assert sized.mean[model] == float(np.nanmean(mean)) and sized.peak[model] == float(np.nanmax(peak))
    runs = {p: run_policy(scenario, workload, models, p) for p in ("no-forecast", "warmserve", "oracle")}
    for policy in ("warmserve", "oracle"):  # without history, both equalled no-forecast to the request
        assert runs[policy].cold_starts < runs["no-forecast"].cold_starts
        assert runs[policy].prewarm_hits > runs["no-forecast"].prewarm_hits


def test_a_log_with_less_than_a_day_before_the_replay_keeps_its_note(tmp_path: Path) -> None:
    """Replayed from its second hour, a log has a few windows of history: the online forecast can only
    repeat the last one, and the note says so per model."""
    spec = WorkloadSpec(_daily_log(tmp_path / "log.csv", 1), offset_s=7 * 3600.0, duration_s=3600.0)
    workload = build_workload(spec)
    notes = history_notes(workload.history, workload.replay_start_s, workload.models)
    day = round(SECONDS_PER_DAY / HISTORY_WINDOW_SEC)
    assert set(notes) == set(workload.models)
    for series in workload.history:  # seven hours of the log, not a window more
        before = round((workload.replay_start_s - series.start_sec) / series.window_sec)
        assert before * series.window_sec == 7 * 3600.0
        assert notes[series.model].startswith(
            f"{before} windows of history before the replay, less than the day ({day})"
        )
