"""`warmserve worker --kube`: a real worker process following its own Pod on the test cluster's API server.

The desired state comes from the Pod's ``warmserve.io/desired`` annotation (watched), the observed
state goes back to its ``warmserve.io/observed`` annotation; the HTTP ``PUT`` feeds the same feed. Over its
whole run the worker never imports the ``kubernetes`` client (its start-up cost; docs/worker-protocol.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import kubernetes.client
import pytest

from e2e.harness.cluster import Cluster
from tests.worker.test_worker_process import WorkerProcess, desired, states, workers  # noqa: F401  (fixture)
from warmserve.cli import main
from warmserve.protocol.state import DESIRED_ANNOTATION, OBSERVED_ANNOTATION, ObservedState, ReplicaState

POD = "worker-k"


def annotate(core: kubernetes.client.CoreV1Api, namespace: str, text: str) -> None:
    body = {"metadata": {"annotations": {DESIRED_ANNOTATION: text}}}
    core.patch_namespaced_pod(POD, namespace, body, _content_type="application/merge-patch+json")


def observed_on_pod(
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    predicate: Callable[[ObservedState], bool],
    timeout: float = 30,
) -> ObservedState:
    deadline = time.monotonic() + timeout
    last: ObservedState | None = None
    while time.monotonic() < deadline:
        annotations: dict[str, Any] = core.read_namespaced_pod(POD, namespace).metadata.annotations or {}
        text = annotations.get(OBSERVED_ANNOTATION)
        if text is not None:
            last = ObservedState.from_json(text)
            if predicate(last):
                return last
        time.sleep(0.05)
    raise AssertionError(f"the Pod's observed annotation did not get there: {last}")


@pytest.mark.slow
@pytest.mark.kube
def test_worker_follows_its_pod_and_reports_on_it(
    kube_cluster: Cluster,
    kube_namespace: str,
    workers: Callable[..., WorkerProcess],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = kube_cluster.api_client()
    core = kubernetes.client.CoreV1Api(api)
    first = desired(POD, 1, {"id": "l0", "model": "llama", "gpus": [0], "role": "serve"})
    pod = kubernetes.client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=kubernetes.client.V1ObjectMeta(name=POD, annotations={DESIRED_ANNOTATION: first}),
        spec=kubernetes.client.V1PodSpec(containers=[kubernetes.client.V1Container(name="w", image="w")]),
    )
    core.create_namespaced_pod(kube_namespace, pod)
    monkeypatch.setenv("POD_NAMESPACE", kube_namespace)
    monkeypatch.setenv("POD_NAME", POD)
    monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # every import, when it happens, to the worker's log
    worker = workers(POD, "--kube", "--gpus", "2", "--speed", "0")

    serving = observed_on_pod(core, kube_namespace, lambda s: states(s) == {"l0": ReplicaState.SERVING})
    assert serving.worker == POD and serving.observed_generation == 1
    assert worker.complete("llama", "hi", 2).status_code == 200

    annotate(
        core, kube_namespace, desired(POD, 2, {"id": "l0", "model": "llama", "gpus": [5], "role": "serve"})
    )
    refused = observed_on_pod(core, kube_namespace, lambda s: s.error != "")
    assert "replicas[0].gpus" in refused.error
    assert refused.observed_generation == 1 and states(refused) == {"l0": ReplicaState.SERVING}

    # Without a control token the Pod's annotation is the only writer: an HTTP PUT, even of a generation
    # far ahead, is refused and orders nothing out; the annotation's generation 3 moves on.
    stray = worker.put(desired(POD, 10**9))
    assert stray.status_code == 403 and stray.json()["error"]["param"] == "Authorization"
    annotate(
        core, kube_namespace, desired(POD, 3, {"id": "l0", "model": "llama", "gpus": [1], "role": "prewarm"})
    )
    moved = observed_on_pod(core, kube_namespace, lambda s: s.observed_generation == 3)
    assert states(moved) == {"l0": ReplicaState.PREWARMED} and moved.replicas[0].gpus == (1,)
    assert moved.error == ""
    assert worker.stop() == 0, worker.log.read_text()[-3000:]
    imported = [
        line.rsplit("|", 1)[-1].strip() for line in worker.log.read_text().splitlines() if "|" in line
    ]
    assert "aiohttp" in imported  # the import log is there
    assert [name for name in imported if name.split(".")[0] == "kubernetes"] == []
    api.close()


def test_kube_without_the_downward_api_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.delenv("POD_NAME", raising=False)
    assert main(["worker", "--name", "w", "--port", "0", "--kube", "--kube-api", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.startswith("warmserve: error: POD_NAMESPACE:")
