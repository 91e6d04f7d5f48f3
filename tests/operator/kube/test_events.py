"""Decision Events against the test control plane's real API server: a record becomes an
``events.k8s.io/v1`` Event with its reason and message, regarding the ModelDeployment (here, with none
known, the worker Pod); repeats raise one Event's series count instead of creating more; a full queue
drops records without blocking, and a write the API server refuses is counted and logged, never raised
(docs/operator.md, "Events")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import kubernetes
import pytest

from e2e.harness.cluster import Cluster
from warmserve.operator.decisions import DecisionRecord
from warmserve.operator.kube.events import EventWriter
from warmserve.operator.kube.metrics import OperatorMetrics

pytestmark = [pytest.mark.kube]
MD = {"apiVersion": "warmserve.io/v1alpha1", "kind": "ModelDeployment", "name": "m-deploy", "uid": "u-1"}


def record(reason: str = "ColdStart", worker: str = "pool-0", n: int = 0) -> DecisionRecord:
    return DecisionRecord(
        reason, "m", f"m@{worker}:0#{n}", worker, f"cold start replica m@{worker}:0#{n}: why"
    )


@pytest.fixture
def api(kube_cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    with kube_cluster.api_client() as client:
        yield client


Writing = Callable[..., Awaitable[EventWriter]]


@pytest.fixture
async def writing(api: kubernetes.client.ApiClient) -> AsyncIterator[Writing]:
    """Starts an :class:`EventWriter`'s task; every one stops with the test."""
    tasks: list[asyncio.Task[None]] = []

    async def start(namespace: str, **options: Any) -> EventWriter:
        writer = EventWriter(
            api, namespace, lambda model: {**MD, "namespace": namespace}, OperatorMetrics(), **options
        )
        tasks.append(asyncio.create_task(writer.run()))
        return writer

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def listed(
    api: kubernetes.client.ApiClient, namespace: str, want: Callable[[list[Any]], bool]
) -> list[Any]:
    events = kubernetes.client.EventsV1Api(api)
    deadline = time.monotonic() + 20
    items: list[Any] = []
    while time.monotonic() < deadline:
        items = events.list_namespaced_event(namespace).items
        if want(items):
            return items
        await asyncio.sleep(0.1)
    pytest.fail(f"Events in {namespace}: {[(e.reason, e.series) for e in items]}")


async def test_a_record_is_an_event_and_repeats_raise_its_series_count(
    api: kubernetes.client.ApiClient, kube_namespace: str, writing: Writing
) -> None:
    ns = kube_namespace
    writer = await writing(ns, flush_s=0.3)
    writer.submit([record(n=1), record("Prewarm", n=2)])
    writer.submit([record(n=3)])
    writer.submit([record(n=4)])

    def aggregated(items: list[Any]) -> bool:
        cold = [e for e in items if e.reason == "ColdStart"]
        return len(items) == 2 and len(cold) == 1 and cold[0].series is not None and cold[0].series.count == 3

    items = await listed(api, ns, aggregated)
    cold = next(e for e in items if e.reason == "ColdStart")
    assert (cold.type, cold.action, cold.reporting_controller) == (
        "Normal",
        "ColdStart",
        "warmserve.io/operator",
    )
    assert cold.note == "cold start replica m@pool-0:0#1: why"  # the first of the series
    assert (cold.regarding.kind, cold.regarding.name, cold.regarding.uid) == (
        "ModelDeployment",
        "m-deploy",
        "u-1",
    )
    assert (cold.related.kind, cold.related.name) == ("Pod", "pool-0")
    # kubectl get events reads them through core/v1 too, regarding the ModelDeployment.
    core = kubernetes.client.CoreV1Api(api).list_namespaced_event(ns, field_selector="reason=ColdStart").items
    assert [(e.involved_object.kind, e.involved_object.name) for e in core] == [
        ("ModelDeployment", "m-deploy")
    ]

    writer.submit([record("ColdStart", worker="pool-1")])  # another Pod: another Event
    await listed(api, ns, lambda items: len(items) == 3)
    assert (
        writer.metrics.registry.get_sample_value("warmserve_operator_errors_total", {"kind": "Event"}) is None
    )


async def test_a_full_queue_drops_without_blocking_and_a_refused_write_is_counted_not_raised(
    writing: Writing,
) -> None:
    writer = await writing("no-such-namespace", queue_size=2)
    started = time.monotonic()
    writer.submit([record(n=n) for n in range(50)])
    assert time.monotonic() - started < 0.05
    metrics = writer.metrics.registry
    assert metrics.get_sample_value("warmserve_operator_events_dropped_total") == 48
    deadline = time.monotonic() + 20

    def failed() -> float:
        return metrics.get_sample_value("warmserve_operator_errors_total", {"kind": "Event"}) or 0.0

    while failed() < 2:  # both queued records, refused
        assert time.monotonic() < deadline, "the refused writes were not counted"
        await asyncio.sleep(0.1)
    writer.submit([record("Evict")])  # the writer goes on after failures
    while failed() < 3:
        assert time.monotonic() < deadline, "the writer stopped after a failure"
        await asyncio.sleep(0.1)
