"""The test control plane itself: scheduling on fake GPUs, Deployments as processes, graceful deletion,
ServiceAccount tokens under RBAC, CEL validation, a clean stop and loopback-only traffic."""

from __future__ import annotations

import ipaddress
import os
import textwrap
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from e2e.harness.cluster import Cluster, start_cluster
from e2e.harness.waiting import wait_for

pytestmark = pytest.mark.kube
WAIT_S = 30.0
SLEEPER = ["python", "-c", "import time; time.sleep(3600)"]


def pod(name: str, command: list[str], *, gpus: int = 0, sa: str = "default", **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "warmserve/worker:test", "command": command}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [container],
            "serviceAccountName": sa,
            "terminationGracePeriodSeconds": 5,
            **spec,
        },
    }


@pytest.fixture
def core(kube_cluster: Cluster) -> Any:
    with kube_cluster.api_client() as client:
        yield kubernetes.client.CoreV1Api(client)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def pod_pid(cluster: Cluster, namespace: str, name: str) -> int:
    """The pid of the Pod's (only) container process, as the node agent runs it."""
    assert cluster.agent is not None
    with cluster.agent.lock:
        run = next(r for r in cluster.agent.runs.values() if (r.namespace, r.name) == (namespace, name))
        assert run.containers[0].proc is not None
        return run.containers[0].proc.pid


def test_a_gpu_pod_runs_on_a_node_with_gpus_and_an_overasking_one_stays_unschedulable(
    kube_cluster: Cluster, kube_namespace: str, core: Any
) -> None:
    core.create_namespaced_pod(kube_namespace, pod("two-gpus", SLEEPER, gpus=2))
    core.create_namespaced_pod(kube_namespace, pod("too-many", SLEEPER, gpus=99))

    running = wait_for(
        "the 2-GPU Pod to run",
        lambda: (p := core.read_namespaced_pod("two-gpus", kube_namespace)).status.phase == "Running" and p,
    )
    node = core.read_node(running.spec.node_name)
    assert int(node.status.allocatable["nvidia.com/gpu"]) >= 2
    assert alive(pod_pid(kube_cluster, kube_namespace, "two-gpus"))
    assert ipaddress.ip_address(running.status.pod_ip).is_loopback

    def unschedulable() -> bool:
        conditions = core.read_namespaced_pod("too-many", kube_namespace).status.conditions or []
        return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conditions)

    wait_for("the 99-GPU Pod to be Unschedulable", unschedulable)
    assert core.read_namespaced_pod("too-many", kube_namespace).status.phase == "Pending"


def test_a_deployment_becomes_a_process_and_a_deleted_pod_is_replaced(
    kube_cluster: Cluster, kube_namespace: str, core: Any
) -> None:
    server = ["python", "-m", "http.server", "--bind", "$(POD_IP)", "8080"]
    deployment = {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "web",
                            "image": "warmserve/gateway:latest",
                            "command": server,
                            "env": [
                                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                            ],
                            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                        }
                    ],
                },
            },
        },
    }
    with kube_cluster.api_client() as client:
        kubernetes.client.AppsV1Api(client).create_namespaced_deployment(kube_namespace, deployment)

    def ready_pod(exclude: str = "") -> Any:
        for p in core.list_namespaced_pod(kube_namespace, label_selector="app=web").items:
            ready = any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            if ready and p.metadata.name != exclude and p.metadata.deletion_timestamp is None:
                return p
        return None

    first = wait_for("the Deployment's Pod to be Ready", ready_pod)
    with urllib.request.urlopen(f"http://{first.status.pod_ip}:8080/", timeout=5) as answer:
        assert answer.status == 200  # the process binds its Pod IP from the downward API
    pid = pod_pid(kube_cluster, kube_namespace, first.metadata.name)

    core.delete_namespaced_pod(first.metadata.name, kube_namespace)
    wait_for("the deleted Pod's process to end", lambda: not alive(pid))
    second = wait_for("a new Ready Pod from the ReplicaSet", lambda: ready_pod(exclude=first.metadata.name))
    assert alive(pod_pid(kube_cluster, kube_namespace, second.metadata.name))

    def released() -> bool:
        try:
            core.read_namespaced_pod(first.metadata.name, kube_namespace)
        except kubernetes.client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for("the deleted Pod object to be released", released)


def test_a_start_up_probe_holds_the_liveness_probe_back_until_the_process_answers(
    kube_cluster: Cluster, kube_namespace: str, core: Any
) -> None:
    # The server answers after 4 s; a liveness probe allowed one failure a second would kill it long before,
    # were it not held back by the start-up probe (30 failures allowed) until the first answer.
    slow = ["sh", "-c", "sleep 4; exec python3 -m http.server --bind $(POD_IP) 8080"]
    probe = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1}
    manifest = pod("slow", slow)
    manifest["spec"]["containers"][0] |= {
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "livenessProbe": probe,
        "readinessProbe": {**probe, "failureThreshold": 3},
        "startupProbe": {**probe, "failureThreshold": 30},
    }
    core.create_namespaced_pod(kube_namespace, manifest)

    def ready() -> Any:
        status = core.read_namespaced_pod("slow", kube_namespace).status
        conditions = status.conditions or []
        return status if any(c.type == "Ready" and c.status == "True" for c in conditions) else None

    status = wait_for("the slow Pod to be Ready", ready)
    assert status.container_statuses[0].restart_count == 0


LIST_PODS = textwrap.dedent(
    """
    import sys, kubernetes
    kubernetes.config.load_kube_config()
    try:
        kubernetes.client.CoreV1Api().list_namespaced_pod(sys.argv[1])
    except kubernetes.client.ApiException as exc:
        print("status", exc.status, exc.reason)
        sys.exit(exc.status // 100)
    print("status 200")
    """
)


def test_a_pod_whose_service_account_may_not_list_pods_gets_403(
    kube_cluster: Cluster, kube_namespace: str, core: Any
) -> None:
    for sa in ("reader", "nobody"):
        core.create_namespaced_service_account(kube_namespace, {"metadata": {"name": sa}})
    with kube_cluster.api_client() as client:
        rbac = kubernetes.client.RbacAuthorizationV1Api(client)
        rbac.create_namespaced_role(
            kube_namespace,
            {
                "metadata": {"name": "list-pods"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            kube_namespace,
            {
                "metadata": {"name": "reader-lists-pods"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "list-pods"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": kube_namespace}],
            },
        )
    for sa in ("reader", "nobody"):
        command = ["python", "-c", LIST_PODS, kube_namespace]
        core.create_namespaced_pod(kube_namespace, pod(sa, command, sa=sa, restartPolicy="Never"))

    def finished(name: str) -> Any:
        status = core.read_namespaced_pod(name, kube_namespace).status
        return status.phase in ("Succeeded", "Failed") and status

    assert finished_exit(wait_for("the reader Pod to finish", lambda: finished("reader"))) == 0
    assert finished_exit(wait_for("the nobody Pod to finish", lambda: finished("nobody"))) == 4  # 403 // 100


def finished_exit(status: Any) -> int:
    code: int = status.container_statuses[0].state.terminated.exit_code
    return code


def test_a_custom_resource_breaking_a_cel_rule_is_refused_with_the_servers_message(
    kube_cluster: Cluster,
) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.warmserve.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"ranges.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "ranges", "singular": "range", "kind": "Range"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                                    "x-kubernetes-validations": [
                                        {"rule": "self.min <= self.max", "message": "min must not exceed max"}
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    with kube_cluster.api_client() as client:
        extensions = kubernetes.client.ApiextensionsV1Api(client)
        extensions.create_custom_resource_definition(crd)
        try:
            custom = kubernetes.client.CustomObjectsApi(client)

            def established() -> bool:
                status = extensions.read_custom_resource_definition(f"ranges.{group}").status
                return any(c.type == "Established" and c.status == "True" for c in status.conditions or [])

            wait_for("the CRD to be established", established)
            body = {
                "apiVersion": f"{group}/v1",
                "kind": "Range",
                "metadata": {"name": "bad"},
                "spec": {"min": 3, "max": 1},
            }
            with pytest.raises(kubernetes.client.ApiException) as refused:
                custom.create_namespaced_custom_object(group, "v1", "default", "ranges", body)
            assert refused.value.status == 422
            assert "min must not exceed max" in str(refused.value.body)
        finally:
            extensions.delete_custom_resource_definition(f"ranges.{group}")


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return inodes


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    address = ipaddress.IPv6Address(words)
    return address.ipv4_mapped or address


def test_no_process_of_the_cluster_has_a_connection_outside_loopback(
    kube_cluster: Cluster, kube_namespace: str
) -> None:
    with kube_cluster.api_client() as client:
        kubernetes.client.CoreV1Api(client).create_namespaced_pod(kube_namespace, pod("sleeper", SLEEPER))
    wait_for(
        "the Pod's process",
        lambda: kube_cluster.agent and kube_cluster.agent.pod_ip(kube_namespace, "sleeper"),
    )
    inodes = {inode for pid in kube_cluster.pids() for inode in _socket_inodes(pid)}
    assert inodes, "the cluster's processes hold no sockets: the check would prove nothing"
    outside = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] not in inodes:
                continue
            for end in (fields[1], fields[2]):
                address = _address(end.split(":")[0])
                if not (address.is_loopback or address.is_unspecified):
                    outside.append(f"{table} {fields[1]} -> {fields[2]}")
    assert not outside


@pytest.mark.slow
def test_the_whole_cluster_stops_with_no_process_left() -> None:
    cluster = start_cluster(nodes=1)
    try:
        with cluster.api_client() as client:
            core = kubernetes.client.CoreV1Api(client)
            wait_for(
                "the default ServiceAccount", lambda: core.list_namespaced_service_account("default").items
            )
            core.create_namespaced_pod("default", pod("sleeper", SLEEPER))
        wait_for(
            "the Pod's process",
            lambda: cluster.agent and cluster.agent.pod_ip("default", "sleeper") and len(cluster.pids()) == 5,
        )
        pids = cluster.pids()
    finally:
        cluster.stop()
    assert [pid for pid in pids if alive(pid)] == []
    assert not cluster.workdir.exists()
