"""The registry's one rule, without a server: the scheduler's models are exactly the ModelDeployments that
parse and fit a WorkerPool, by served name; every other one keeps its reason, naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.crds.crd_objects import example
from tests.operator.planning_builders import snapshot, workers
from warmserve.operator.kube.registry import ColdStarts, Registry
from warmserve.operator.policies.registry import policy_by_name
from warmserve.operator.scheduler import Scheduler
from warmserve.protocol.errors import InvalidFieldError

SERVED = "llama-2-7b-chat"


def scheduler() -> Scheduler:
    entry = policy_by_name("warmserve")
    assert entry.policy is not None
    return Scheduler({}, entry.policy, entry.initial_state)


def pool() -> dict[str, Any]:
    return example("WorkerPool", "fake-gpus")


def deployment(name: str = "llama2-7b", **model: Any) -> dict[str, Any]:
    obj = copy.deepcopy(example("ModelDeployment", "llama2-7b"))
    obj["metadata"]["name"] = name
    obj["spec"]["model"] |= model
    return obj


def test_a_deployment_is_scheduled_once_a_pool_can_hold_it_and_dropped_when_deleted() -> None:
    registry = Registry(scheduler())
    verdict = registry.put_deployment(deployment())
    assert not verdict.served and verdict.error.startswith("spec.pools: expected one of ['fake-gpus']")
    assert dict(registry.scheduler.models) == {}

    registry.put_pool(pool())
    verdict = registry.verdict("llama2-7b")
    assert verdict is not None and verdict.served and verdict.deployment is not None
    assert list(registry.scheduler.models) == [SERVED]
    assert registry.scheduler.models[SERVED].min_instances == 1

    registry.drop_deployment("llama2-7b")
    assert dict(registry.scheduler.models) == {}
    assert registry.verdict("llama2-7b") is None


def test_the_same_document_again_leaves_the_scheduler_alone() -> None:
    registry = Registry(scheduler())
    registry.put_pool(pool())
    registry.put_deployment(deployment())
    models = registry.scheduler.models
    registry.put_deployment(deployment())
    registry.put_pool(pool())
    assert registry.scheduler.models is models  # set_models not called: the next snapshot is revised


def test_a_deployment_too_big_for_every_pool_or_unparsable_is_refused_naming_the_field() -> None:
    registry = Registry(scheduler())
    registry.put_pool(pool())
    too_big = registry.put_deployment(deployment("big", servedName="big", weightBytes="500Gi"))
    assert too_big.deployment is not None and too_big.error.startswith("spec.pools:")
    assert "poolBytes >= 536870912000" in too_big.error
    bad = registry.put_deployment(deployment("bad", tensorParallel=3))
    assert bad.deployment is None and bad.error.startswith("spec.model.tensorParallel:")
    assert dict(registry.scheduler.models) == {}


def test_a_served_name_belongs_to_the_first_deployment_by_name() -> None:
    registry = Registry(scheduler())
    registry.put_pool(pool())
    registry.put_deployment(deployment("b"))
    registry.put_deployment(deployment("a"))
    assert registry.verdicts["a"].served
    assert registry.verdicts["b"].error.startswith("spec.model.servedName: expected a name no other")
    assert list(registry.scheduler.models) == [SERVED]


def test_a_pool_that_stops_parsing_is_forgotten_with_the_models_it_held() -> None:
    registry = Registry(scheduler())
    registry.put_pool(pool())
    registry.put_deployment(deployment())
    broken = pool() | {"spec": {**pool()["spec"], "gpusPerPod": 0}}
    with pytest.raises(InvalidFieldError, match=r"^spec\.gpusPerPod"):
        registry.put_pool(broken)
    assert registry.pools == {} and dict(registry.scheduler.models) == {}


def test_cold_starts_are_recorded_by_model_with_their_time_and_reason() -> None:
    registry = Registry(scheduler())
    registry.put_pool(pool())
    registry.put_deployment(deployment())
    cold_starts = ColdStarts()
    entry = policy_by_name("warmserve")
    assert entry.policy is not None
    step = cold_starts.recording(entry.policy)
    state = entry.initial_state
    plan, _ = step(snapshot(registry.scheduler.models.values(), cluster=workers(1, 2, 80), now=7.0), state)
    assert [type(a).__name__ for a in plan][:1] == ["ColdStart"]
    record = cold_starts.last[SERVED]
    assert record.time == 7.0 and "min_instances=1" in record.reason


def test_a_status_write_alone_parses_nothing_again() -> None:
    registry = Registry(scheduler())
    registry.put_pool(pool())
    obj = deployment()
    registry.put_deployment(obj)
    verdicts = registry.verdicts
    written = obj | {"status": {"replicas": {"serving": 1}}}
    written["metadata"] = obj["metadata"] | {"resourceVersion": "42"}
    registry.put_deployment(written)
    assert registry.verdicts is verdicts
    scaled = copy.deepcopy(obj)
    scaled["spec"]["replicas"] = 3  # kubectl scale: a floor of three serving instances
    registry.put_deployment(scaled)
    assert registry.scheduler.models[SERVED].min_instances == 3


def test_the_events_of_a_served_model_regard_its_deployment_and_none_once_it_is_refused_or_gone() -> None:
    registry = Registry(scheduler())
    obj = deployment()
    obj["metadata"] |= {"namespace": "default", "uid": "u-1"}
    registry.put_deployment(obj)
    assert registry.reference(SERVED) is None  # refused: no pool holds it yet
    registry.put_pool(pool())
    assert registry.reference(SERVED) == {
        "apiVersion": "warmserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "llama2-7b",
        "namespace": "default",
        "uid": "u-1",
    }
    registry.drop_deployment("llama2-7b")
    assert registry.reference(SERVED) is None


def test_served_gives_each_served_models_deployment_and_uid_for_the_forecast_source() -> None:
    registry = Registry(scheduler())
    registry.put_pool(pool())
    doc = deployment()
    doc["metadata"]["uid"] = "u-1"
    registry.put_deployment(doc)
    registry.put_deployment(deployment("too-big", servedName="too-big", weightBytes="500Gi"))
    served = registry.served()
    assert list(served) == [SERVED]  # the refused one is not served
    assert served[SERVED].uid == "u-1" and served[SERVED].deployment.forecast.forecaster == "auto"
    registry.drop_deployment("llama2-7b")
    assert registry.served() == {}
