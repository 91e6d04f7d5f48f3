"""``warmserve operator`` as a process against the test control plane's real API server, with worker and
gateway Pods the node agent runs as processes: the example WorkerPool becomes running worker Pods, a
ModelDeployment is served by them (the scheduler writes the desired annotation, a worker reports the
model serving, the status says so), a ModelDeployment no pool can hold is Degraded naming the field,
deleting a ModelDeployment releases its replicas, scaling the pool in deletes a worker Pod, and SIGTERM
stops the operator cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from e2e.harness.cluster import Cluster
from e2e.harness.kubeconfig import write_kubeconfig
from tests.crds.test_crds_api import PLURALS, crds, create, raw, wait_for
from tests.operator.kube.test_kube_cluster import gateway_pod
from warmserve.protocol.resource_names import GROUP, VERSION
from warmserve.protocol.state import DESIRED_ANNOTATION, OBSERVED_ANNOTATION, DesiredState, ObservedState

__all__ = ["crds"]  # the CRDs installed once per module (a fixture)

pytestmark = [pytest.mark.kube, pytest.mark.slow]
WAIT_S = 90.0
SERVED = "llama-2-7b-chat"  # examples/modeldeployment-llama2-7b.yaml
ROLE = Path(__file__).resolve().parents[3] / "deploy" / "operator-role.yaml"
OPERATOR = "warmserve-operator"


Start = Callable[[], subprocess.Popen[bytes]]


@pytest.fixture
def start_operator(kube_cluster: Cluster, kube_namespace: str, crds: None, tmp_path: Path) -> Iterator[Start]:
    """Starts ``warmserve operator`` for the test's namespace, as a ServiceAccount holding exactly the Role
    in ``deploy/`` (so a permission missing there fails the test); its output appended to
    ``operator.log``. Every process still running at the end is killed."""
    kubeconfig = operator_kubeconfig(kube_cluster, kube_namespace, tmp_path / "operator.kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    args = ["operator", "--namespace", kube_namespace, "--tick", "0.5", "--status-interval", "1"]
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        with (tmp_path / "operator.log").open("ab") as log:
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "warmserve.cli", *args],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        return started[-1]

    yield start
    print(f"operator log (last lines):\n{log_tail(tmp_path)}")  # shown when the test fails
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def operator_kubeconfig(kube_cluster: Cluster, namespace: str, path: Path) -> Path:
    """A kubeconfig for ServiceAccount ``warmserve-operator`` bound to ``deploy/operator-role.yaml``."""
    role = yaml.safe_load(ROLE.read_text())
    with kube_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        core.create_namespaced_service_account(namespace, {"metadata": {"name": OPERATOR}})
        rbac.create_namespaced_role(namespace, role)
        subject = {"kind": "ServiceAccount", "name": OPERATOR, "namespace": namespace}
        role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
        rbac.create_namespaced_role_binding(
            namespace, {"metadata": {"name": OPERATOR}, "roleRef": role_ref, "subjects": [subject]}
        )
        token = core.create_namespaced_service_account_token(OPERATOR, namespace, {"spec": {}}).status.token
    return write_kubeconfig(path, kube_cluster.server, kube_cluster.pki.ca.cert, {"token": token})


def log_tail(tmp_path: Path) -> str:
    return "\n".join((tmp_path / "operator.log").read_text(errors="replace").splitlines()[-30:])


def get(api: kubernetes.client.ApiClient, namespace: str, kind: str, name: str) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(api)
    obj: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)
    return obj


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def gone(api: kubernetes.client.ApiClient, namespace: str, kind: str, name: str) -> bool:
    try:
        get(api, namespace, kind, name)
    except kubernetes.client.ApiException as exc:
        return exc.status == 404
    return False


def test_the_operator_runs_the_pool_serves_the_model_degrades_a_bad_one_and_releases_on_delete(
    kube_cluster: Cluster,
    kube_namespace: str,
    start_operator: Start,
    tmp_path: Path,
) -> None:
    ns = kube_namespace
    operator = start_operator()
    with kube_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespaced_pod(ns, gateway_pod("gw"))  # the scheduler plans from the gateways' demand
        pool = create(api, ns, raw("workerpool-fake-gpus.yaml"))
        create(api, ns, raw("modeldeployment-llama2-7b.yaml"))
        too_big = raw("modeldeployment-llama2-7b.yaml")
        too_big["metadata"]["name"] = "too-big"
        too_big["spec"]["model"] |= {"servedName": "too-big", "weightBytes": "500Gi"}
        create(api, ns, too_big)

        def workers() -> list[Any]:
            pods = core.list_namespaced_pod(ns, label_selector="warmserve.io/pool=fake-gpus").items
            return pods if len(pods) == 2 and all(p.status.phase == "Running" for p in pods) else []

        pods = wait_for("two running worker Pods", workers, timeout=WAIT_S)
        assert sorted(p.metadata.name for p in pods) == ["fake-gpus-0", "fake-gpus-1"]
        assert all(p.metadata.owner_references[0].uid == pool["metadata"]["uid"] for p in pods)
        assert all(p.spec.service_account_name == "warmserve-worker" for p in pods)

        def serving_worker() -> tuple[DesiredState, ObservedState] | None:
            for pod in core.list_namespaced_pod(ns, label_selector="warmserve.io/pool=fake-gpus").items:
                notes = pod.metadata.annotations or {}
                if DESIRED_ANNOTATION in notes and OBSERVED_ANNOTATION in notes:
                    observed = ObservedState.from_json(notes[OBSERVED_ANNOTATION])
                    if any((r.model, r.state) == (SERVED, "serving") for r in observed.replicas):
                        return DesiredState.from_json(notes[DESIRED_ANNOTATION]), observed
            return None

        desired, observed = wait_for("a worker reporting the model serving", serving_worker, timeout=WAIT_S)
        assert SERVED in desired.models and observed.error == ""

        def ready() -> dict[str, Any] | None:
            md = get(api, ns, "ModelDeployment", "llama2-7b")
            return md if condition(md, "Ready").get("status") == "True" else None

        md = wait_for("the ModelDeployment Ready", ready, timeout=30)
        status = md["status"]
        assert status["replicas"]["serving"] >= 1
        assert status["servedName"] == SERVED
        assert status["selector"] == "app.kubernetes.io/name=warmserve-worker,warmserve.io/pool=fake-gpus"
        assert condition(md, "Ready")["observedGeneration"] == md["metadata"]["generation"]
        assert condition(md, "Degraded")["status"] == "False"
        assert "lastColdStart" in status  # the first instance of an always-on model is a cold start

        def cold_start_event() -> list[Any]:
            listed = kubernetes.client.EventsV1Api(api).list_namespaced_event(ns).items
            return [e for e in listed if e.reason == "ColdStart" and e.regarding.name == "llama2-7b"]

        (event,) = wait_for("a ColdStart Event on the ModelDeployment", cold_start_event, timeout=10)
        assert (event.type, event.regarding.kind, event.regarding.uid) == (
            "Normal",
            "ModelDeployment",
            md["metadata"]["uid"],
        )
        assert event.related.kind == "Pod" and event.related.name.startswith("fake-gpus-")
        assert event.note.startswith(f"cold start replica {SERVED}@{event.related.name}:")

        def pool_counted() -> dict[str, Any] | None:
            # The serving replica's weights and KV cache show in the pool's bytes at the next status write.
            wp = get(api, ns, "WorkerPool", "fake-gpus")
            counted = wp.get("status", {})
            return wp if counted.get("gpus") == 4 and counted.get("poolBytesUsed", 0) > 0 else None

        wp = wait_for("the WorkerPool status counting 4 GPUs and bytes in use", pool_counted, timeout=30)
        assert wp["status"]["podsReady"] == 2 and condition(wp, "Ready")["status"] == "True"
        assert (
            wp["status"]["poolBytesFree"] == 4 * 80 * 2**30 - wp["status"]["poolBytesUsed"]
        )  # 4 GPUs, 80Gi each

        # kill -9 and start again: the new operator goes on where the old one stopped (its first ticks
        # know the models already), the same replica serving throughout, not released and loaded again.
        (replica,) = [r.id for r in observed.replicas if r.model == SERVED]
        operator.kill()
        operator.wait()
        operator = start_operator()

        def restarted() -> bool:
            return (tmp_path / "operator.log").read_text().count("Initial authentication has finished") == 2

        wait_for("the second operator to start", restarted, timeout=30)
        deadline = time.monotonic() + 3.0  # six ticks of the new scheduler
        while time.monotonic() < deadline:
            now_serving = serving_worker()
            assert now_serving is not None, "the serving replica was released after the restart"
            assert [r.id for r in now_serving[0].replicas if r.model == SERVED] == [replica]
            time.sleep(0.1)

        bad = get(api, ns, "ModelDeployment", "too-big")
        degraded = condition(bad, "Degraded")
        assert degraded["status"] == "True" and degraded["reason"] == "InvalidSpec"
        assert "spec.pools" in degraded["message"] and "poolBytes" in degraded["message"]
        assert condition(bad, "Ready")["status"] == "False"

        def event() -> list[Any]:
            events = core.list_namespaced_event(ns, field_selector="involvedObject.name=too-big").items
            return [e for e in events if "spec.pools" in e.message]

        warning = wait_for("an Event on too-big naming spec.pools", event, timeout=10)[0]
        assert (warning.type, warning.reason) == ("Warning", "InvalidSpec")

        custom = kubernetes.client.CustomObjectsApi(api)
        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURALS["ModelDeployment"], "llama2-7b")

        def released() -> bool:
            return gone(api, ns, "ModelDeployment", "llama2-7b") and serving_worker() is None

        wait_for("the ModelDeployment gone and its replicas released", released, timeout=30)
        for pod in core.list_namespaced_pod(ns, label_selector="warmserve.io/pool=fake-gpus").items:
            observed = ObservedState.from_json(pod.metadata.annotations[OBSERVED_ANNOTATION])
            assert all(r.model != SERVED for r in observed.replicas)

        # kubectl scale wp/fake-gpus --replicas=1: the Pod beyond it is deleted, the status counts one.
        custom.patch_namespaced_custom_object_scale(
            GROUP, VERSION, ns, PLURALS["WorkerPool"], "fake-gpus", {"spec": {"replicas": 1}}
        )

        def scaled_in() -> bool:
            counted = get(api, ns, "WorkerPool", "fake-gpus").get("status", {})
            names = {
                p.metadata.name
                for p in core.list_namespaced_pod(ns).items
                if not p.metadata.deletion_timestamp
            }
            return "fake-gpus-1" not in names and "fake-gpus-0" in names and counted.get("pods") == 1

        wait_for("fake-gpus-1 deleted by scaling the pool to 1", scaled_in, timeout=30)

        # Nothing of ours is left holding the namespace's deletion once the operator is gone.
        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURALS["ModelDeployment"], "too-big")
        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURALS["WorkerPool"], "fake-gpus")
        for kind, name in (("ModelDeployment", "too-big"), ("WorkerPool", "fake-gpus")):
            wait_for(f"{kind} {name} deleted", lambda k=kind, n=name: gone(api, ns, k, n), timeout=30)

    operator.send_signal(signal.SIGTERM)
    assert operator.wait(timeout=15) == 0, log_tail(tmp_path)
