"""Status from what the operator observed, without a server: conditions and their transition times,
a ModelDeployment's replica counts, forecast and cold start, a WorkerPool's Pods, GPUs and pool bytes."""

from __future__ import annotations

import copy
from typing import Any

from tests.crds.crd_objects import example
from tests.operator.planning_builders import model, prewarmed, serving, snapshot
from warmserve.operator.kube.registry import ColdStartRecord, Verdict
from warmserve.operator.kube.status import (
    Condition,
    conditions,
    model_status,
    pool_status,
    replica_counts,
    timestamp,
)
from warmserve.operator.planning.snapshot import Replica
from warmserve.operator.resources import parse_model_deployment, parse_worker_pool
from warmserve.protocol.state import OBSERVED_ANNOTATION, GpuUsage, ObservedState, ReplicaState, Role

GIB = 1 << 30
SERVED = "llama-2-7b-chat"


def served() -> Verdict:
    return Verdict(parse_model_deployment(example("ModelDeployment", "llama2-7b")))


def by_type(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    first = conditions([Condition("Ready", False, "BelowFloor", "0 serving")], 1, 100.0, [])
    assert first[0]["lastTransitionTime"] == timestamp(100.0) == "1970-01-01T00:01:40Z"
    same = conditions([Condition("Ready", False, "BelowFloor", "still 0")], 2, 200.0, first)
    assert same[0]["lastTransitionTime"] == timestamp(100.0) and same[0]["observedGeneration"] == 2
    changed = conditions([Condition("Ready", True, "Serving", "1 serving")], 2, 300.0, same)
    assert changed[0]["lastTransitionTime"] == timestamp(300.0) and changed[0]["status"] == "True"
    unknown = conditions([Condition("Ready", None, "NotObserved", "")], 2, 400.0, changed)
    assert unknown[0]["status"] == "Unknown"


def test_replicas_are_counted_by_state_and_only_for_their_model() -> None:
    m, other = model(SERVED, 4), model("other", 4)
    loading = Replica("l", SERVED, "w0", (2,), ReplicaState.LOADING, Role.PREWARM)
    promoting = Replica("p", SERVED, "w0", (3,), ReplicaState.PROMOTING, Role.SERVE)
    snap = snapshot(
        [m, other],
        [
            serving("s", SERVED, (0,), 4),
            prewarmed("w", SERVED, (1,)),
            loading,
            promoting,
            serving("o", "other", (1,), 4),
        ],
    )
    counts = replica_counts(snap, SERVED)
    assert (counts.serving, counts.prewarmed, counts.loading) == (1, 1, 2)


def test_a_served_model_at_its_floor_is_ready_with_its_forecast_and_last_cold_start() -> None:
    snap = snapshot(
        [model(SERVED, 4, min_instances=1)], [serving("s", SERVED, (0,), 4)], forecasts={SERVED: (1.5, 3.0)}
    )
    status = model_status(served(), 2, snap, ColdStartRecord(50.0, "min_instances=1"), 120.0, {})
    assert status["replicas"] == {"serving": 1, "prewarmed": 0, "loading": 0}
    assert status["servedName"] == SERVED
    assert status["selector"] == "app.kubernetes.io/name=warmserve-worker,warmserve.io/pool=fake-gpus"
    assert status["lastForecast"] == {"mean": 1.5, "peak": 3.0, "time": timestamp(100.0)}
    assert status["lastColdStart"] == {"time": timestamp(50.0), "reason": "min_instances=1"}
    conds = by_type(status)
    assert [conds[t]["status"] for t in ("Ready", "Progressing", "Degraded")] == ["True", "False", "False"]
    assert all(c["observedGeneration"] == 2 for c in conds.values())


def test_a_repeated_forecast_keeps_its_time_so_the_status_does_not_change() -> None:
    m = model(SERVED, 4, min_instances=1)
    first = model_status(served(), 1, snapshot([m], forecasts={SERVED: (1.5, 3.0)}), None, 100.0, {})
    later = snapshot([m], forecasts={SERVED: (1.5, 3.0)}, now=160.0)
    assert model_status(served(), 1, later, None, 160.0, first) == first
    moved = snapshot([m], forecasts={SERVED: (2.0, 3.0)}, now=160.0)
    assert model_status(served(), 1, moved, None, 160.0, first)["lastForecast"] == {
        "mean": 2.0,
        "peak": 3.0,
        "time": timestamp(160.0),
    }


def test_below_its_floor_a_model_is_progressing_and_before_any_observation_unknown() -> None:
    empty = snapshot([model(SERVED, 4, min_instances=1)])
    conds = by_type(model_status(served(), 1, empty, None, 0.0, {}))
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "BelowFloor")
    assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == ("True", "ScalingUp")
    conds = by_type(model_status(served(), 1, None, None, 0.0, {}))
    assert conds["Ready"]["status"] == conds["Progressing"]["status"] == "Unknown"


def test_a_refused_model_is_degraded_with_the_error_naming_the_field() -> None:
    error = "spec.pools: expected one of ['fake-gpus'] ..."
    status = model_status(Verdict(None, error), 3, snapshot([]), None, 0.0, {})
    conds = by_type(status)
    assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == ("True", "InvalidSpec")
    assert conds["Degraded"]["message"] == conds["Ready"]["message"] == error
    assert conds["Ready"]["status"] == "False" and "servedName" not in status
    assert status["replicas"] == {"serving": 0, "prewarmed": 0, "loading": 0}


def pod(
    name: str, *, ready: bool, report: ObservedState | None = None, deleting: bool = False
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "annotations": {}}
    if report is not None:
        metadata["annotations"][OBSERVED_ANNOTATION] = report.to_json()
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    state = "True" if ready else "False"
    return {
        "metadata": metadata,
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": state}]},
    }


def test_a_pool_counts_its_pods_and_the_gpus_and_bytes_of_the_ready_ones_that_report() -> None:
    pool = parse_worker_pool(example("WorkerPool", "fake-gpus"))
    gpus = (GpuUsage(0, 80 * GIB, 10 * GIB), GpuUsage(1, 80 * GIB, 0))
    report = ObservedState(worker="fake-gpus-0", observed_generation=1, ready=True, gpus=gpus, replicas=())
    pods = [
        pod("fake-gpus-0", ready=True, report=report),
        pod("fake-gpus-1", ready=True),  # ready, no report yet: no GPUs counted
        pod("fake-gpus-2", ready=False, deleting=True),  # leaving: not counted at all
    ]
    status = pool_status(pool, "", 1, pods, 0.0, {})
    assert (status["pods"], status["podsReady"], status["gpus"]) == (2, 2, 2)
    assert (status["poolBytesUsed"], status["poolBytesFree"]) == (10 * GIB, 150 * GIB)
    assert status["selector"] == "app.kubernetes.io/name=warmserve-worker,warmserve.io/pool=fake-gpus"
    conds = by_type(status)
    assert [conds[t]["status"] for t in ("Ready", "Progressing", "Degraded")] == ["True", "False", "False"]

    more = copy.deepcopy(example("WorkerPool", "fake-gpus"))
    more["spec"]["pods"] = 3
    conds = by_type(pool_status(parse_worker_pool(more), "", 2, pods, 0.0, status))
    assert (conds["Ready"]["status"], conds["Progressing"]["status"]) == ("False", "True")
    assert conds["Ready"]["message"] == "2 of 3 worker Pods ready (2 exist)"


def test_a_pool_that_does_not_parse_is_degraded_naming_the_field() -> None:
    status = pool_status(None, "spec.gpusPerPod: expected ...", 4, [], 0.0, {})
    conds = by_type(status)
    assert conds["Degraded"]["status"] == "True" and conds["Degraded"]["message"].startswith(
        "spec.gpusPerPod"
    )
    assert "selector" not in status
