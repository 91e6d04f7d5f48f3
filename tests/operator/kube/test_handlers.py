"""The WorkerPool handlers against the real API server: the status timer, when it runs before the change
handler (as at start-up), makes the workers' ServiceAccount before their Pods, so they are not refused
(docs/operator.md, Handlers)."""

from __future__ import annotations

import aiohttp
import kopf
import kubernetes
import pytest

from e2e.harness.cluster import Cluster
from tests.crds.test_crds_api import crds, create, raw
from warmserve.operator.kube.cluster import KubeCluster
from warmserve.operator.kube.handlers import Handlers
from warmserve.operator.kube.metrics import OperatorMetrics
from warmserve.operator.kube.registry import ColdStarts, Recorded, Registry
from warmserve.operator.planning.planner import plan_step
from warmserve.operator.planning.reactive import ReactiveState
from warmserve.operator.resources import WORKER_SERVICE_ACCOUNT
from warmserve.operator.scheduler import Scheduler

__all__ = ["crds"]  # the CRDs installed once per module (a fixture)

pytestmark = [pytest.mark.kube]


async def test_the_status_timer_first_makes_the_workers_service_account_then_their_pods(
    kube_cluster: Cluster, kube_namespace: str, crds: None
) -> None:
    ns = kube_namespace
    with kube_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        pool = create(api, ns, raw("workerpool-fake-gpus.yaml"))
        async with aiohttp.ClientSession() as session:
            registry = Registry(Scheduler({}, plan_step, ReactiveState()))
            cluster = Recorded(KubeCluster(api, session, ns))
            handlers = Handlers(api, registry, ColdStarts(), cluster, "test", 60.0, OperatorMetrics())
            await handlers.pool_timer(body=kopf.Body(pool), patch=kopf.Patch())
        core.read_namespaced_service_account(WORKER_SERVICE_ACCOUNT, ns)
        pods = core.list_namespaced_pod(ns).items
        assert len(pods) == pool["spec"]["pods"]
        assert {p.spec.service_account_name for p in pods} == {WORKER_SERVICE_ACCOUNT}
