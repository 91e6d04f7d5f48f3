"""What ``KubeCluster`` reads from a Pod document, decided without the API server: a worker's report or
why it has none, where a gateway serves ``/demand``, and the gateways' reports added up. (The same
functions over Pods of the real API server: test_kube_cluster.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from warmserve.operator.kube.cluster import NotReporting, demand_url, total_demand, worker_report
from warmserve.operator.planning.snapshot import Demand
from warmserve.protocol.demand_report import ModelDemand
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import OBSERVED_ANNOTATION, ObservedState

REPORT = ObservedState(worker="w", observed_generation=3, ready=True, gpus=(), replicas=())
OVERFULL = '{"worker": "w", "gpus": [{"index": 0, "capacity_bytes": 1, "used_bytes": 2}]}'


def pod(
    name: str = "w",
    phase: str = "Running",
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
    ready: bool = True,
    ip: str = "127.0.3.4",
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "annotations": annotations}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {"phase": phase, "podIP": ip, "conditions": [{"type": "Ready", "status": str(ready)}]}
    return {"metadata": metadata, "spec": {"containers": [{"name": "c", "ports": ports}]}, "status": status}


def test_a_running_pods_report_is_read_and_every_other_pod_says_why_it_has_none() -> None:
    assert worker_report(pod(annotations={OBSERVED_ANNOTATION: REPORT.to_json()})) == REPORT
    with pytest.raises(NotReporting, match=r"no warmserve\.io/observed annotation yet"):
        worker_report(pod())
    with pytest.raises(NotReporting, match="phase Succeeded, not Running"):
        worker_report(pod(phase="Succeeded", annotations={OBSERVED_ANNOTATION: REPORT.to_json()}))
    with pytest.raises(NotReporting, match="being deleted"):
        worker_report(pod(deleting=True, annotations={OBSERVED_ANNOTATION: REPORT.to_json()}))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{not json", "observed"),
        (OVERFULL, "gpus[0].used_bytes"),
        (REPORT.to_json().replace('"worker": "w"', '"worker": "v"'), "worker"),
    ],
)
def test_a_malformed_or_misaddressed_report_names_the_field(text: str, field: str) -> None:
    with pytest.raises(InvalidFieldError) as refused:
        worker_report(pod(annotations={OBSERVED_ANNOTATION: text}))
    assert refused.value.field == field


def test_a_gateway_serves_demand_on_its_port_named_http_else_the_gateways_default() -> None:
    assert demand_url(pod()) == "http://127.0.3.4:8080/demand"
    named = [{"name": "metrics", "containerPort": 9090}, {"name": "http", "containerPort": 8081}]
    assert demand_url(pod(ports=named)) == "http://127.0.3.4:8081/demand"
    assert demand_url(pod(ip="fd00::7")) == "http://[fd00::7]:8080/demand"


def test_a_gateway_not_ready_being_deleted_or_without_an_ip_is_not_asked() -> None:
    assert demand_url(pod(ready=False)) is None
    assert demand_url(pod(deleting=True)) is None
    assert demand_url(pod(ip="")) is None


def test_the_gateways_reports_are_added_up_per_model() -> None:
    one = {"a": ModelDemand(inflight=2, queued=1, arrivals_total=10), "b": ModelDemand(0, 0, 3)}
    two = {"a": ModelDemand(inflight=1, queued=4, arrivals_total=7)}
    assert total_demand([one, two]) == {
        "a": Demand(inflight=3.0, queued=5),
        "b": Demand(inflight=0.0, queued=0),
    }
    assert total_demand([]) == {}
