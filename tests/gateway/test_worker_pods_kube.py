"""The gateway's discovery against the test control plane's real API server, with worker Pods the node agent
runs as real ``warmserve worker --kube`` processes: a gateway started before any ModelDeployment or worker Pod
exists serves the model of one applied afterwards (once its status names it, as the operator writes it) and
routes an OpenAI request to a worker Pod created afterwards; a deleted worker Pod leaves its worker list and
instance table, and a Degraded ModelDeployment's model is no longer served. (The pure rules alone:
test_worker_pods.py, test_model_deployments.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import kubernetes
import pytest

from e2e.harness.cluster import Cluster
from tests.crds.test_crds_api import crds, create, raw
from tests.gateway.conftest import RunningGateway, start_gateway
from tests.operator.kube.test_kube_cluster import (
    SPEC,
    eventually,
    let_workers_follow_their_pods,
    pod_state,
    real_worker_pod,
    until_running,
)
from warmserve.gateway.config import GatewayConfig
from warmserve.protocol.resource_names import GROUP, MODEL_DEPLOYMENTS, VERSION
from warmserve.protocol.state import DESIRED_ANNOTATION, DesiredReplica, DesiredState, Role

pytestmark = [pytest.mark.kube, pytest.mark.slow]
__all__ = ["crds"]


@pytest.fixture
def api(kube_cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    with kube_cluster.api_client() as client:
        yield client


@pytest.fixture
async def gateway(kube_namespace: str, api: kubernetes.client.ApiClient) -> AsyncIterator[RunningGateway]:
    """A gateway in discovery mode for the test's namespace: its workers and models are found there."""
    config = GatewayConfig(models=(), discover_namespace=kube_namespace, hold_timeout_s=5.0)
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


def set_status(api: kubernetes.client.ApiClient, ns: str, name: str, status: dict[str, Any]) -> None:
    """Write a ModelDeployment's status as the operator would."""
    kubernetes.client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, MODEL_DEPLOYMENTS, name, {"status": status}
    )


async def test_a_model_and_a_worker_pod_applied_after_the_gateway_are_served_and_leave_when_gone(
    kube_cluster: Cluster,
    kube_namespace: str,
    crds: None,
    api: kubernetes.client.ApiClient,
    gateway: RunningGateway,
) -> None:
    ns, core = kube_namespace, kubernetes.client.CoreV1Api(api)
    assert gateway.gateway.workers == () and gateway.gateway.router.models == ()
    deployment = raw("modeldeployment-llama2-7b.yaml")
    deployment["metadata"]["name"] = "m"
    deployment["spec"]["model"]["servedName"] = "m"
    deployment["spec"]["serving"] = {"maxConcurrency": 4}
    create(api, ns, deployment)
    await asyncio.sleep(1.0)
    assert gateway.gateway.router.models == ()  # not parsed by the operator yet: not served
    await asyncio.to_thread(set_status, api, ns, "m", {"servedName": "m"})
    table = gateway.gateway.router

    async def declared() -> bool | None:
        return True if table.models == ("m",) else None

    await eventually("the gateway to serve m", declared, timeout=10, seen=lambda: table.models)
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

    await eventually("worker-0 to leave the gateway", left, timeout=10, seen=lambda: table.table)

    degraded = {"type": "Degraded", "status": "True", "reason": "InvalidSpec", "message": "no pool"}
    degraded["lastTransitionTime"] = "2026-01-01T00:00:00Z"
    await asyncio.to_thread(set_status, api, ns, "m", {"servedName": "m", "conditions": [degraded]})

    async def dropped() -> bool | None:
        return True if table.models == () else None

    await eventually("a Degraded model to leave the gateway", dropped, timeout=10, seen=lambda: table.models)
    body = {"model": "m", "prompt": "hi", "max_tokens": 2}
    async with aiohttp.ClientSession() as s, s.post(f"{gateway.url}/v1/completions", json=body) as r:
        assert r.status == 404
