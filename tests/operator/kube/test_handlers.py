"""The WorkerPool handlers against the real API server: the status timer, when it runs before the change
handler (as at start-up), makes the workers' ServiceAccount before their Pods, so they are not refused; each
pool's workers may get, list, watch and patch their own pool's Pods and no other, as the API server's
SubjectAccessReview and a worker's own token show, and the Role follows the pool as it scales
(docs/operator.md, Handlers and RBAC). A ModelDeployment's status follows each tick's snapshot at once
(docs/operator.md, Status cadence)."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import kubernetes
import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.kubeconfig import write_kubeconfig
from e2e.harness.waiting import wait_for
from tests.crds.test_crds_api import crds, create, raw
from warmserve.operator.kube.cluster import KubeCluster
from warmserve.operator.kube.handlers import Handlers
from warmserve.operator.kube.metrics import OperatorMetrics
from warmserve.operator.kube.registry import ColdStarts, Recorded, Registry
from warmserve.operator.planning.planner import plan_step
from warmserve.operator.planning.reactive import ReactiveState
from warmserve.operator.ports import Observation
from warmserve.operator.resources import WORKER_VERBS, parse_model_deployment, parse_worker_pool
from warmserve.operator.scheduler import Scheduler
from warmserve.protocol.resource_names import GROUP, MODEL_DEPLOYMENTS, VERSION, WORKER_POOLS
from warmserve.protocol.state import GpuUsage, ObservedReplica, ObservedState, ReplicaState

__all__ = ["crds"]  # the CRDs installed once per module (a fixture)

pytestmark = [pytest.mark.kube]
#: Every verb a worker could try on a Pod; it holds WORKER_VERBS on its pool's Pods only.
POD_VERBS = ("get", "list", "watch", "patch", "update", "create", "delete")


def handlers(api: kubernetes.client.ApiClient, session: aiohttp.ClientSession, namespace: str) -> Handlers:
    registry = Registry(Scheduler({}, plan_step, ReactiveState()))
    cluster = Recorded(KubeCluster(api, session, namespace))
    return Handlers(api, registry, ColdStarts(), cluster, "test", 60.0, OperatorMetrics())


def pool_object(name: str, pods: int) -> dict[str, Any]:
    obj = copy.deepcopy(raw("workerpool-fake-gpus.yaml"))
    obj["metadata"]["name"] = name
    obj["spec"]["pods"] = pods
    return obj


def access(
    api: kubernetes.client.ApiClient, namespace: str, account: str, pods: list[str]
) -> dict[str, set[str]]:
    """The verbs the API server allows ``account`` on each of ``pods`` ("" for all Pods: a list or
    watch without a name), by SubjectAccessReview; Pods with no verb allowed are left out."""
    reviews = kubernetes.client.AuthorizationV1Api(api)
    user = f"system:serviceaccount:{namespace}:{account}"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]
    allowed: dict[str, set[str]] = {}
    for pod in pods:
        for verb in POD_VERBS:
            attributes = {"namespace": namespace, "verb": verb, "resource": "pods", "name": pod}
            review = {"spec": {"user": user, "groups": groups, "resourceAttributes": attributes}}
            if reviews.create_subject_access_review(review).status.allowed:
                allowed.setdefault(pod, set()).add(verb)
    return allowed


async def test_the_status_timer_first_makes_the_workers_service_account_then_their_pods(
    kube_cluster: Cluster, kube_namespace: str, crds: None
) -> None:
    ns = kube_namespace
    with kube_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        pool = create(api, ns, raw("workerpool-fake-gpus.yaml"))
        async with aiohttp.ClientSession() as session:
            await handlers(api, session, ns).pool_timer(body=kopf.Body(pool), patch=kopf.Patch())
        account = parse_worker_pool(pool).service_account
        core.read_namespaced_service_account(account, ns)
        pods = core.list_namespaced_pod(ns).items
        assert len(pods) == pool["spec"]["pods"]
        assert {p.spec.service_account_name for p in pods} == {account}


async def test_a_pools_workers_may_use_its_pods_only_and_the_role_follows_its_scale(
    kube_cluster: Cluster, kube_namespace: str, crds: None, tmp_path: Path
) -> None:
    ns = kube_namespace
    names = ["a-0", "a-1", "a-2", "b-0", "b-1", "other", ""]
    worker = set(WORKER_VERBS)
    with kube_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        custom = kubernetes.client.CustomObjectsApi(api)
        a, b = create(api, ns, pool_object("a", 2)), create(api, ns, pool_object("b", 1))
        async with aiohttp.ClientSession() as session:
            handler = handlers(api, session, ns)
            for obj in (a, b):
                await handler.pool_changed(body=kopf.Body(obj), patch=kopf.Patch())
            assert access(api, ns, "warmserve-worker-a", names) == {"a-0": worker, "a-1": worker}
            assert access(api, ns, "warmserve-worker-b", names) == {"b-0": worker}

            # The worker's own token: its Pod by name (the list-then-watch of warmserve.worker.desired_source,
            # and the patch of its observed annotation) passes; all Pods, or another pool's, are refused.
            token = core.create_namespaced_service_account_token("warmserve-worker-a", ns, {"spec": {}})
            path = write_kubeconfig(
                tmp_path / "worker.kubeconfig",
                kube_cluster.server,
                kube_cluster.pki.ca.cert,
                {"token": token.status.token},
            )
            with kubernetes.config.new_client_from_config(str(path)) as as_worker:
                own = kubernetes.client.CoreV1Api(as_worker)
                listed = own.list_namespaced_pod(ns, field_selector="metadata.name=a-1")
                assert [p.metadata.name for p in listed.items] == ["a-1"]
                watched = kubernetes.watch.Watch().stream(
                    own.list_namespaced_pod,
                    ns,
                    field_selector="metadata.name=a-1",
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=1,
                )
                # The watch is allowed and ends in time; the worker may have patched its own Pod meanwhile.
                assert {event["object"].metadata.name for event in watched} <= {"a-1"}
                own.patch_namespaced_pod("a-1", ns, {"metadata": {"annotations": {"t": "1"}}})
                refused = (
                    lambda: own.list_namespaced_pod(ns),
                    lambda: own.list_namespaced_pod(ns, field_selector="metadata.name=b-0"),
                    lambda: own.read_namespaced_pod("b-0", ns),
                    lambda: own.patch_namespaced_pod("b-0", ns, {"metadata": {"annotations": {"t": "1"}}}),
                )
                for call in refused:
                    with pytest.raises(kubernetes.client.ApiException) as denied:
                        call()
                    assert denied.value.status == 403

            def scale(pods: int) -> dict[str, Any]:
                scaled: dict[str, Any] = custom.patch_namespaced_custom_object(
                    GROUP, VERSION, ns, WORKER_POOLS, "a", {"spec": {"pods": pods}}
                )
                return scaled

            await handler.pool_changed(body=kopf.Body(scale(3)), patch=kopf.Patch())  # named before created
            assert access(api, ns, "warmserve-worker-a", names) == {
                "a-0": worker,
                "a-1": worker,
                "a-2": worker,
            }
            one = scale(1)
            await handler.pool_changed(body=kopf.Body(one), patch=kopf.Patch())
            kept = {
                p.metadata.name
                for p in core.list_namespaced_pod(ns, label_selector="warmserve.io/pool=a").items
            }
            assert kept <= {"a-0", "a-1", "a-2"} and "a-0" in kept
            # Those still terminating keep their access; one the node agent finished deleting between the
            # handler's Role update and this list may still be named until the next reconcile (below).
            assert kept <= set(access(api, ns, "warmserve-worker-a", names)) <= {"a-0", "a-1", "a-2"}

            def gone() -> bool:
                return not core.list_namespaced_pod(
                    ns, field_selector="metadata.name!=a-0", label_selector="warmserve.io/pool=a"
                ).items

            wait_for("a-1 and a-2 gone", gone, timeout=60)
            await handler.pool_timer(body=kopf.Body(one), patch=kopf.Patch())  # their names leave the Role
            assert access(api, ns, "warmserve-worker-a", names) == {"a-0": worker}


def serving_worker(model: str) -> Observation:
    """One worker of the pool reporting a replica of ``model`` serving on its GPU 0."""
    replica = ObservedReplica(id="r0", model=model, gpus=(0,), state=ReplicaState.SERVING, since=0.0)
    gpus = (GpuUsage(index=0, capacity_bytes=80 << 30, used_bytes=20 << 30),)
    worker = ObservedState(
        worker="fake-gpus-0", observed_generation=0, ready=True, gpus=gpus, replicas=(replica,)
    )
    return Observation(now=time.time(), workers={worker.worker: worker})


async def test_a_model_is_ready_as_soon_as_a_tick_sees_it_serve_and_a_same_status_is_not_written_again(
    kube_cluster: Cluster, kube_namespace: str, crds: None
) -> None:
    """The status follows the scheduler's snapshot after each tick (:meth:`Handlers.write_statuses`), not
    one status interval later (the timer here: 60 s); a status the snapshot does not change costs no
    write."""
    ns = kube_namespace
    with kube_cluster.api_client() as api:
        custom = kubernetes.client.CustomObjectsApi(api)
        pool = create(api, ns, raw("workerpool-fake-gpus.yaml"))
        md = create(api, ns, raw("modeldeployment-llama2-7b.yaml"))
        name = md["metadata"]["name"]

        def stored() -> dict[str, Any]:
            got: dict[str, Any] = custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, MODEL_DEPLOYMENTS, name
            )
            return got

        async with aiohttp.ClientSession() as session:
            h = handlers(api, session, ns)
            h.registry.put_pool(pool)
            patch = kopf.Patch()
            await h.model_changed(body=kopf.Body(md), patch=patch)
            assert not patch  # the status is the tick's to write
            assert await h.write_statuses() == 1  # the first status, before any tick
            ready = next(c for c in stored()["status"]["conditions"] if c["type"] == "Ready")
            assert (ready["status"], stored()["status"]["observedGeneration"]) == ("Unknown", 1)

            h.registry.scheduler.tick(serving_worker(parse_model_deployment(md).spec.name))
            assert await h.write_statuses() == 1
            ready = next(c for c in stored()["status"]["conditions"] if c["type"] == "Ready")
            assert (ready["status"], ready["reason"]) == ("True", "Serving")
            assert stored()["status"]["replicas"]["serving"] == 1

            version = stored()["metadata"]["resourceVersion"]
            assert await h.write_statuses() == 0
            assert stored()["metadata"]["resourceVersion"] == version
