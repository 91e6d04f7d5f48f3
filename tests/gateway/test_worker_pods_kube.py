"""The gateway's discovery against the test control plane's real API server, with worker Pods the node agent
runs as real ``warmserve worker --kube`` processes: a gateway started before any worker Pod exists routes an
OpenAI request to one created afterwards, and a deleted worker Pod leaves its worker list and instance table.
(The Pod → URL rule alone: test_worker_pods.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import kubernetes
import pytest

from e2e.harness.cluster import Cluster
from tests.gateway.conftest import RunningGateway, start_gateway
from tests.operator.kube.test_kube_cluster import (
    SPEC,
    eventually,
    let_workers_follow_their_pods,
    pod_state,
    real_worker_pod,
    until_running,
)
from warmserve.gateway.config import DeclaredModel, GatewayConfig
from warmserve.protocol.state import DESIRED_ANNOTATION, DesiredReplica, DesiredState, Role

pytestmark = [pytest.mark.kube, pytest.mark.slow]


@pytest.fixture
def api(kube_cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    with kube_cluster.api_client() as client:
        yield client


@pytest.fixture
async def gateway(kube_namespace: str, api: kubernetes.client.ApiClient) -> AsyncIterator[RunningGateway]:
    """A gateway in discovery mode for the test's namespace, serving ``m`` (B = 4)."""
    config = GatewayConfig(
        models=(DeclaredModel("m", 4),), discover_namespace=kube_namespace, hold_timeout_s=5.0
    )
    running = await start_gateway(config, api)
    yield running
    await running.runner.cleanup()


def serving_worker_pod(name: str) -> dict[str, Any]:
    """A real worker Pod as the operator makes them (its port named ``http``), ordered to serve ``m``."""
    pod = real_worker_pod(name)
    pod["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8000}]
    replica = DesiredReplica(id="m-0", model="m", gpus=(0,), role=Role.SERVE)
    desired = DesiredState(worker=name, generation=1, models={"m": SPEC}, replicas=(replica,))
    pod["metadata"]["annotations"] = {DESIRED_ANNOTATION: desired.to_json()}
    return pod


async def test_a_worker_pod_created_after_the_gateway_serves_through_it_and_leaves_when_deleted(
    kube_cluster: Cluster,
    kube_namespace: str,
    api: kubernetes.client.ApiClient,
    gateway: RunningGateway,
) -> None:
    ns, core = kube_namespace, kubernetes.client.CoreV1Api(api)
    assert gateway.gateway.workers == ()
    let_workers_follow_their_pods(kube_cluster, ns)
    core.create_namespaced_pod(ns, serving_worker_pod("worker-0"))
    await until_running(core, ns, "worker-0", ready=True)
    url = f"http://{pod_state(core, ns, 'worker-0')[2]}:8000"

    async def found() -> bool | None:
        return True if gateway.gateway.workers == (url,) else None

    await eventually("the gateway to find worker-0", found, timeout=10, seen=lambda: gateway.gateway.workers)

    async def answered() -> dict[str, Any] | None:
        body = {"model": "m", "prompt": "hi", "max_tokens": 2}
        async with aiohttp.ClientSession() as s, s.post(f"{gateway.url}/v1/completions", json=body) as r:
            return await r.json() if r.status == 200 else None  # 503 until the replica serves

    answer = await eventually("a completion through the gateway", answered)
    assert answer["usage"]["completion_tokens"] == 2
    assert [i.worker for i in gateway.gateway.router.table["m"]] == [url]

    await asyncio.to_thread(core.delete_namespaced_pod, "worker-0", ns)

    async def left() -> bool | None:
        return True if gateway.gateway.workers == () and not gateway.gateway.router.table else None

    table = gateway.gateway.router
    await eventually("worker-0 to leave the gateway", left, timeout=10, seen=lambda: table.table)
