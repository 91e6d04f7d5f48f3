"""``warmserve operator`` as a process against the test control plane's real API server, with worker and
gateway Pods the node agent runs as processes: two operators start, one holds the Lease and acts while the
other waits as a ready standby; the example WorkerPool becomes running worker Pods, a ModelDeployment is
served by them (the scheduler writes the desired annotation, a worker reports the model serving, the
status says so), a ModelDeployment no pool can hold is Degraded naming the field; after ``kill -9`` of the
leader the standby takes the Lease within its duration and goes on with the same replica serving;
deleting a ModelDeployment releases its replicas, scaling the pool in deletes a worker Pod, and SIGTERM
stops the operator cleanly, releasing the Lease."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from e2e.harness.cluster import Cluster, free_port
from e2e.harness.kubeconfig import write_kubeconfig
from e2e.harness.waiting import wait_for
from tests.crds.test_crds_api import PLURALS, crds, create, raw
from tests.operator.kube.test_kube_cluster import gateway_pod
from warmserve.protocol.resource_names import GROUP, VERSION
from warmserve.protocol.state import DESIRED_ANNOTATION, OBSERVED_ANNOTATION, DesiredState, ObservedState

__all__ = ["crds"]  # the CRDs installed once per module (a fixture)

pytestmark = [pytest.mark.kube, pytest.mark.slow]
WAIT_S = 90.0
SERVED = "llama-2-7b-chat"  # examples/modeldeployment-llama2-7b.yaml
ROLE = Path(__file__).resolve().parents[3] / "deploy" / "operator-role.yaml"
OPERATOR = "warmserve-operator"
LEASE_S = 5  # --lease-duration: a standby takes over within 1.4 times this after a kill -9


@dataclass(frozen=True)
class Operator:
    """One ``warmserve operator`` process: its probes on ``port``, its output in ``log``."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def identity(self) -> str:
        """Its ``holderIdentity`` in the Lease."""
        return f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{self.process.pid}"

    def get(self, path: str) -> tuple[int, str]:
        """``GET path`` on its probe port: the status and the text (0 and the error when unreachable)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)


Start = Callable[[], Operator]


@pytest.fixture
def start_operator(kube_cluster: Cluster, kube_namespace: str, crds: None, tmp_path: Path) -> Iterator[Start]:
    """Starts ``warmserve operator`` for the test's namespace, as a ServiceAccount holding exactly the Role
    in ``deploy/`` (so a permission missing there fails the test), with a short Lease and its probes on
    a free port; the output of the n-th in ``operator-n.log``. Every process still running at the end is
    killed."""
    kubeconfig = operator_kubeconfig(kube_cluster, kube_namespace, tmp_path / "operator.kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    args = ["operator", "--namespace", kube_namespace, "--tick", "0.5", "--status-interval", "1"]
    args += ["--lease-duration", str(LEASE_S), "--health-host", "127.0.0.1"]
    started: list[Operator] = []

    def start() -> Operator:
        port, log = free_port(), tmp_path / f"operator-{len(started)}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "warmserve.cli", *args, "--health-port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(Operator(process, port, log))
        return started[-1]

    yield start
    for operator in started:  # shown when the test fails
        print(f"{operator.log.name} (last lines):\n{log_tail(operator.log)}")
        if operator.process.poll() is None:
            operator.process.kill()
            operator.process.wait()


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


def log_tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-30:])


def lease_holder(api: kubernetes.client.ApiClient, namespace: str) -> str:
    lease = kubernetes.client.CoordinationV1Api(api).read_namespaced_lease(OPERATOR, namespace)
    return str(lease.spec.holder_identity or "")


def leader_and_standby(
    api: kubernetes.client.ApiClient, namespace: str, *ops: Operator
) -> tuple[Operator, ...]:
    """The operators ordered leader first, once one holds the Lease and says so, and the rest are ready
    standbys; else ``()``."""
    try:
        holder = lease_holder(api, namespace)
    except kubernetes.client.ApiException:
        return ()
    ordered = sorted(ops, key=lambda o: o.identity != holder)
    roles = [o.get("/readyz") for o in ordered]
    expected = [(200, "ok (leader)\n")] + [(200, "ok (standby)\n")] * (len(ops) - 1)
    return tuple(ordered) if ordered[0].identity == holder and roles == expected else ()


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
) -> None:
    ns = kube_namespace
    first, second = start_operator(), start_operator()  # two replicas: one active, one standby
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
        assert all(p.spec.service_account_name == "warmserve-worker-fake-gpus" for p in pods)

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
        # kopf's last-handled state is kept in the operator's memory, and its progress marker written only
        # with progress that stays: kopf wrote nothing to the object but its finalizer.
        assert not [a for a in md["metadata"].get("annotations") or {} if a.startswith(f"operator.{GROUP}/")]
        # A change is still told from the last handled state: the status follows the new generation.
        kubernetes.client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP, VERSION, ns, "modeldeployments", "llama2-7b", {"spec": {"priority": 3}}
        )

        def current() -> dict[str, Any] | None:
            md = get(api, ns, "ModelDeployment", "llama2-7b")
            generation = md["metadata"]["generation"]
            done = md["status"].get("observedGeneration") == generation == 2
            return md if done and condition(md, "Ready")["observedGeneration"] == generation else None

        wait_for("the status of the changed ModelDeployment", current, timeout=30)

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

        # One of the two holds the Lease and acts; the other is a ready standby that has done nothing.
        operator, standby = wait_for(
            "one operator leading", lambda: leader_and_standby(api, ns, first, second), timeout=30
        )
        quiet = standby.log.read_text()
        assert "Initial authentication has finished" not in quiet and "plan:" not in quiet
        for one, leading in ((operator, 1.0), (standby, 0.0)):
            assert one.get("/healthz")[0] == 200
            assert f"warmserve_operator_leader {leading}" in one.get("/metrics")[1]

        # kill -9 the leader: the standby takes the Lease within its duration and goes on where the old
        # one stopped (its first ticks know the models already), the same replica serving throughout, not
        # released and loaded again.
        (replica,) = [r.id for r in observed.replicas if r.model == SERVED]
        operator.process.kill()
        operator.process.wait()
        killed = time.monotonic()
        wait_for(
            "the standby to take the Lease", lambda: lease_holder(api, ns) == standby.identity, 2 * LEASE_S
        )
        took = time.monotonic() - killed
        print(f"takeover after kill -9: {took:.1f} s (--lease-duration {LEASE_S})")
        assert took <= LEASE_S * 1.4 + 0.5  # the duration, two retry periods (docs/operator.md), the polling
        operator = wait_for("the new leader serving", lambda: leader_and_standby(api, ns, standby), 30)[0]
        deadline = time.monotonic() + 3.0  # six ticks of the new scheduler
        while time.monotonic() < deadline:
            now_serving = serving_worker()
            assert now_serving is not None, "the serving replica was released after the takeover"
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

    operator.process.send_signal(signal.SIGTERM)
    assert operator.process.wait(timeout=15) == 0, log_tail(operator.log)
    with kube_cluster.api_client() as api:
        assert lease_holder(api, ns) == ""  # released: a successor need not wait out the duration
