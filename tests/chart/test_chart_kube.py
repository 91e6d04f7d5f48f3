"""The chart on the test control plane's real API server with the real helm: its rendering passes the API
server's server-side dry run; ``helm install`` runs two operators (a leader and a ready standby) and the
gateway as Pods (the node agent runs them as processes), the example WorkerPool and ModelDeployment then
become running worker Pods and a Ready model, served by the gateway that found the worker Pods and the model
itself; ``helm upgrade`` rolls the gateway onto changed values (static workers' URLs) and it serves a
completion; ``helm uninstall`` leaves nothing of the release but the CRDs. The RBAC is proven
least-privilege with the API server's access reviews (the gateway may read Pods and ModelDeployments, not
write them; the workers of the example pool, whose RBAC the installed operator made, only their own Pods)
and a denied call made with the operator's own token."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.kubeconfig import write_kubeconfig
from e2e.harness.waiting import TimedOut, wait_for
from tests.chart.helm import CHART, helm, helm_binary, rendered
from tests.crds.test_crds_api import crds, create, raw
from tests.operator.kube.test_handlers import access
from tests.operator.kube.test_operator import condition, get, gone
from warmserve.operator.resources import WORKER_VERBS

__all__ = ["crds", "helm_binary"]

pytestmark = [pytest.mark.kube]
WAIT_S = 90.0
RELEASE = "ws"


@pytest.fixture
def api(kube_cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    with kube_cluster.api_client() as client:
        yield client


def test_the_rendered_chart_passes_the_api_servers_dry_run(
    kube_cluster: Cluster, kube_namespace: str, crds: None, helm_binary: Path, tmp_path: Path
) -> None:
    out = helm(
        helm_binary,
        tmp_path,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        kube_namespace,
        "--set",
        "examples.enabled=true",
    )
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(out)
    applied = kube_cluster.kubectl("apply", "--dry-run=server", "-n", kube_namespace, "-f", str(manifest))
    for kind in (
        "deployment.apps/warmserve-operator",
        "role.rbac.authorization.k8s.io/warmserve-operator",
        "deployment.apps/warmserve-gateway",
        "service/warmserve-gateway",
        "workerpool.warmserve.io/fake-gpus",
        "modeldeployment.warmserve.io/llama2-7b",
    ):
        assert f"{kind} created (server dry run)" in applied
    bad = tmp_path / "bad.yaml"  # the dry run is real: an object the API server refuses fails it
    bad.write_text('{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {}}')
    with pytest.raises(RuntimeError, match=r"spec\.selector: Required value"):
        kube_cluster.kubectl("apply", "--dry-run=server", "-n", kube_namespace, "-f", str(bad))


def test_the_roles_allow_what_the_components_use_and_nothing_else(
    kube_cluster: Cluster,
    kube_namespace: str,
    helm_binary: Path,
    tmp_path: Path,
    api: kubernetes.client.ApiClient,
) -> None:
    ns = kube_namespace
    objects = rendered(helm_binary, tmp_path)
    for obj in objects:
        if obj["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            obj["metadata"]["namespace"] = ns
            for subject in obj.get("subjects", []):
                subject["namespace"] = ns
            kubernetes.utils.create_from_dict(api, obj, namespace=ns)

    def can(
        account: str, verb: str, resource: str, namespace: str = ns, group: str = "", name: str = ""
    ) -> bool:
        review = {
            "spec": {
                "user": f"system:serviceaccount:{ns}:{account}",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": verb,
                    "resource": resource,
                    "group": group,
                    "name": name,
                },
            }
        }
        answer = kubernetes.client.AuthorizationV1Api(api).create_subject_access_review(review)
        return bool(answer.status.allowed)

    operator = "warmserve-operator"
    assert all(can(operator, v, "pods") for v in ("get", "list", "watch", "create", "delete", "patch"))
    assert can(operator, "patch", "workerpools", group="warmserve.io")
    assert can(operator, "patch", "modeldeployments/status", group="warmserve.io")
    assert can(operator, "create", "roles", group="rbac.authorization.k8s.io")
    assert all(can(operator, v, "events", group="events.k8s.io") for v in ("create", "patch"))
    assert not can(operator, "delete", "events", group="events.k8s.io")
    assert not can(operator, "list", "events", group="events.k8s.io")
    assert not can(operator, "list", "secrets")
    assert all(can(operator, v, "configmaps") for v in ("get", "list", "create", "patch"))  # forecast history
    assert not can(operator, "delete", "configmaps")
    assert not can(operator, "delete", "workerpools", group="warmserve.io")
    assert not can(operator, "create", "deployments", group="apps")
    assert not can(operator, "delete", "roles", group="rbac.authorization.k8s.io")
    assert not can(operator, "list", "pods", namespace="default")
    lease, coordination = "warmserve-operator", "coordination.k8s.io"  # the Lease electing the active one
    assert can(operator, "create", "leases", group=coordination)
    assert all(can(operator, v, "leases", group=coordination, name=lease) for v in ("get", "update"))
    assert not can(operator, "update", "leases", group=coordination, name="kube-scheduler")
    assert not can(operator, "delete", "leases", group=coordination, name=lease)
    assert not can(operator, "list", "leases", group=coordination)
    assert not can("warmserve-worker", "get", "pods", name="fake-gpus-0")  # each pool's, by the operator
    gateway = "warmserve-gateway"  # finds the worker Pods and the models: reads them, writes nothing
    assert all(can(gateway, v, "pods") for v in ("get", "list", "watch"))
    assert all(can(gateway, v, "modeldeployments", group="warmserve.io") for v in ("get", "list", "watch"))
    assert not can(gateway, "patch", "modeldeployments/status", group="warmserve.io")
    assert not can(gateway, "list", "workerpools", group="warmserve.io")
    assert not any(can(gateway, v, "pods") for v in ("patch", "update", "create", "delete"))
    assert not can(gateway, "list", "secrets") and not can(gateway, "list", "pods", namespace="default")

    # The same, as the operator itself: its own token lists Pods here and is refused Secrets and elsewhere.
    core = kubernetes.client.CoreV1Api(api)
    token = core.create_namespaced_service_account_token(operator, ns, {"spec": {}}).status.token
    path = write_kubeconfig(
        tmp_path / "operator.kubeconfig", kube_cluster.server, kube_cluster.pki.ca.cert, {"token": token}
    )
    with kubernetes.config.new_client_from_config(str(path)) as as_operator:
        own = kubernetes.client.CoreV1Api(as_operator)
        own.list_namespaced_pod(ns)
        for call in (lambda: own.list_namespaced_secret(ns), lambda: own.list_namespaced_pod("default")):
            with pytest.raises(kubernetes.client.ApiException) as refused:
                call()
            assert refused.value.status == 403


@pytest.mark.slow
def test_install_serves_a_model_upgrade_rolls_the_gateway_uninstall_leaves_only_the_crds(
    kube_cluster: Cluster,
    kube_namespace: str,
    crds: None,
    helm_binary: Path,
    tmp_path: Path,
    api: kubernetes.client.ApiClient,
) -> None:
    ns = kube_namespace
    core = kubernetes.client.CoreV1Api(api)
    apps = kubernetes.client.AppsV1Api(api)

    def run_helm(*args: str) -> str:
        return helm(helm_binary, tmp_path, *args, "--namespace", ns, kubeconfig=kube_cluster.kubeconfig)

    values = ["--set-json", "operator.tick=0.5", "--set-json", "operator.statusInterval=1"]
    values += ["--set-json", "operator.replicas=2", "--set-json", "operator.lease.duration=3"]  # one standby
    notes = run_helm("install", RELEASE, str(CHART), *values)
    assert f"kubectl -n {ns} apply -f examples/workerpool-fake-gpus.yaml" in notes  # NOTES.txt's next steps

    def running(selector: str, count: int) -> list[Any]:
        pods = core.list_namespaced_pod(ns, label_selector=selector).items
        live = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
        return live if len(live) == count else []

    def ready_pods(selector: str, count: int) -> list[Any]:
        pods = [
            p
            for p in running(selector, count)
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return pods if len(pods) == count else []

    # Both operator Pods pass their readiness probe: the leader, and the standby (so --wait would finish).
    wait_for(
        "the two operator Pods ready",
        lambda: ready_pods("app.kubernetes.io/name=warmserve-operator", 2),
        WAIT_S,
    )
    lease = kubernetes.client.CoordinationV1Api(api).read_namespaced_lease("warmserve-operator", ns)
    assert lease.spec.holder_identity and lease.spec.lease_duration_seconds == 3
    wait_for(
        "the gateway Pod running", lambda: running("app.kubernetes.io/name=warmserve-gateway", 1), WAIT_S
    )
    create(api, ns, raw("workerpool-fake-gpus.yaml"))
    create(api, ns, raw("modeldeployment-llama2-7b.yaml"))
    workers = wait_for("two worker Pods running", lambda: running("warmserve.io/pool=fake-gpus", 2), WAIT_S)
    # The operator, with the chart's Role, gave the pool's workers their own Pods and no other.
    names = ["fake-gpus-0", "fake-gpus-1", "fake-gpus-2", "other", ""]
    worker = set(WORKER_VERBS)
    assert access(api, ns, "warmserve-worker-fake-gpus", names) == {
        "fake-gpus-0": worker,
        "fake-gpus-1": worker,
    }

    def ready() -> bool:
        return condition(get(api, ns, "ModelDeployment", "llama2-7b"), "Ready").get("status") == "True"

    wait_for("the ModelDeployment Ready", ready, WAIT_S)

    completion = {"model": "llama-2-7b-chat", "prompt": "hi", "max_tokens": 3}

    def answered(gateway: Any) -> Any:
        request = urllib.request.Request(
            f"http://{gateway.status.pod_ip}:8080/v1/completions",
            data=json.dumps(completion).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)
        except OSError:  # not ready yet, or a 503 while no instance is free
            return None

    # The gateway of the first revision found the worker Pods itself (as its own ServiceAccount).
    first = running("app.kubernetes.io/name=warmserve-gateway", 1)[0]
    assert "--discover-namespace" in first.spec.containers[0].args
    answer = wait_for("a completion served through the discovering gateway", lambda: answered(first), WAIT_S)
    assert answer["usage"]["completion_tokens"] == 3

    urls = ",".join(
        f"http://{p.status.pod_ip}:{p.spec.containers[0].ports[0].container_port}" for p in workers
    )
    static = ["--set", f"gateway.workers={{{urls}}}", "--set", "gateway.models[0].name=llama-2-7b-chat"]
    run_helm("upgrade", RELEASE, str(CHART), "--reuse-values", *static)

    def rolled() -> list[Any]:
        pods = running("app.kubernetes.io/name=warmserve-gateway", 1)
        return [p for p in pods if "--worker" in p.spec.containers[0].args]

    gateway = wait_for("the gateway Pod of the upgraded release", rolled, WAIT_S)[0]
    args = gateway.spec.containers[0].args
    assert sorted(a for a in args if a.startswith("http://")) == sorted(urls.split(","))
    assert [r["revision"] for r in json.loads(run_helm("history", RELEASE, "-o", "json"))] == [1, 2]
    answer = wait_for("a completion served through the upgraded gateway", lambda: answered(gateway), WAIT_S)
    assert answer["usage"]["completion_tokens"] == 3

    # The resources go first, while the operator still runs to release their worker Pods (docs/install.md).
    custom = kubernetes.client.CustomObjectsApi(api)
    custom.delete_namespaced_custom_object("warmserve.io", "v1alpha1", ns, "modeldeployments", "llama2-7b")
    custom.delete_namespaced_custom_object("warmserve.io", "v1alpha1", ns, "workerpools", "fake-gpus")
    wait_for(
        "the resources gone",
        lambda: gone(api, ns, "WorkerPool", "fake-gpus") and gone(api, ns, "ModelDeployment", "llama2-7b"),
        WAIT_S,
    )
    run_helm("uninstall", RELEASE, "--wait", "--timeout", "60s")

    def nothing_left() -> dict[str, list[str]]:
        left = {
            "pods": [p.metadata.name for p in core.list_namespaced_pod(ns).items],
            "deployments": [d.metadata.name for d in apps.list_namespaced_deployment(ns).items],
            "services": [s.metadata.name for s in core.list_namespaced_service(ns).items],
            "serviceaccounts": [
                s.metadata.name
                for s in core.list_namespaced_service_account(ns).items
                if s.metadata.name != "default"
            ],
            "configmaps": [
                c.metadata.name
                for c in core.list_namespaced_config_map(ns).items
                if c.metadata.name != "kube-root-ca.crt"
            ],
            "roles": [
                r.metadata.name
                for r in kubernetes.client.RbacAuthorizationV1Api(api).list_namespaced_role(ns).items
            ],
            "rolebindings": [
                r.metadata.name
                for r in kubernetes.client.RbacAuthorizationV1Api(api).list_namespaced_role_binding(ns).items
            ],
        }
        return {kind: names for kind, names in left.items() if names}

    left: dict[str, list[str]] = {}

    def nothing() -> bool:
        left.clear()
        left.update(nothing_left())
        return not left

    try:
        wait_for("no object of the release left", nothing, WAIT_S)
    except TimedOut:
        pytest.fail(f"objects of the release left {WAIT_S:.0f} s after uninstall: {left}")
    crd_names = {
        c.metadata.name
        for c in kubernetes.client.ApiextensionsV1Api(api).list_custom_resource_definition().items
    }
    assert {"workerpools.warmserve.io", "modeldeployments.warmserve.io"} <= crd_names
