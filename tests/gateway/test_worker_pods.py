"""Which worker Pods the gateway routes to and at which URL (:func:`worker_urls` over
:func:`~warmserve.protocol.pods.pod_url`), decided from Pod documents without the API server. (The same over
a real API server, with Pods coming and going: test_worker_pods_kube.py.)"""

from __future__ import annotations

from typing import Any

from warmserve.gateway.worker_pods import worker_urls
from warmserve.protocol.pods import pod_url

HTTP = [{"name": "metrics", "containerPort": 9090}, {"name": "http", "containerPort": 8000}]


def pod(
    name: str = "w",
    *,
    phase: str = "Running",
    ready: bool = True,
    ip: str | None = "127.0.3.4",
    deleting: bool = False,
    ports: list[dict[str, Any]] | None = HTTP,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}]}
    if ip is not None:
        status["podIP"] = ip
    spec = {"containers": [{"name": "worker", "ports": ports}]}
    return {"metadata": metadata, "spec": spec, "status": status}


def test_a_running_ready_pod_is_reached_at_its_ip_and_port_named_http() -> None:
    assert pod_url(pod(), "http") == "http://127.0.3.4:8000"
    assert pod_url(pod(ip="fd00::7"), "http") == "http://[fd00::7]:8000"


def test_a_pod_not_running_not_ready_without_ip_being_deleted_or_without_the_port_is_left_out() -> None:
    for left_out in (
        pod(phase="Pending"),
        pod(phase="Succeeded"),
        pod(ready=False),
        pod(ip=None),
        pod(ip=""),
        pod(deleting=True),
        pod(ports=None),
        pod(ports=[{"name": "metrics", "containerPort": 9090}]),
    ):
        assert pod_url(left_out, "http") is None, left_out
    assert pod_url(pod(ports=None), "http", 8080) == "http://127.0.3.4:8080"  # a default port, if given


def test_a_pod_without_status_yet_is_left_out() -> None:
    assert pod_url({"metadata": {"name": "w"}, "spec": {"containers": [{"name": "c"}]}}, "http") is None


def test_the_worker_urls_are_the_ready_pods_sorted_and_once_each() -> None:
    pods = [
        pod("b", ip="127.0.3.9"),
        pod("a", ip="127.0.3.4"),
        pod("c", ip="127.0.3.5", ready=False),
        pod("d", ip="127.0.3.4"),  # a recreated Pod given the same IP before the old one left
    ]
    assert worker_urls(pods) == ("http://127.0.3.4:8000", "http://127.0.3.9:8000")
    assert worker_urls([]) == ()
