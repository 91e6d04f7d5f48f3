"""The end-to-end scenario (:mod:`e2e.scenario`, docs/e2e.md) on kind, with the images built from
``images/Dockerfile`` and fake ``nvidia.com/gpu`` capacity on the nodes. ``e2e/kind/run.sh`` prepares the
cluster and runs this module; without it (no Docker, kind or internet here) the test skips saying so. The
same scenario runs on the local real control plane in every ``make test``: ``e2e/test_scenario.py``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from e2e.scenario import Scenario, ScenarioError, summary

pytestmark = [pytest.mark.kind, pytest.mark.slow, pytest.mark.timeout(1800)]
CONTEXT = os.environ.get("WARMSERVE_KIND_CONTEXT")


def _missing() -> str | None:
    """Why the kind path cannot run here, or None."""
    tools = [t for t in ("docker", "kind", "kubectl", "helm") if shutil.which(t) is None]
    if tools:
        where = "run e2e/kind/run.sh where Docker, kind and internet exist"
        return f"no {', '.join(tools)} on this machine: {where}"
    if CONTEXT is None:
        return "WARMSERVE_KIND_CONTEXT is not set: e2e/kind/run.sh creates the kind cluster and sets it"
    return None


class KindTarget:
    """A kind cluster as the scenario's :class:`~e2e.scenario.Target`; the gateway through port-forward."""

    def __init__(self, context: str, namespace: str) -> None:
        self.context, self.namespace = context, namespace
        self.api = kubernetes.config.new_client_from_config(context=context)
        self.forwards: dict[str, tuple[subprocess.Popen[str], str]] = {}

    def helm(self, *args: str) -> str:
        command = ["helm", "--kube-context", self.context, "--namespace", self.namespace, *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise ScenarioError(f"helm {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done.stdout

    def gateway_url(self, pod: kubernetes.client.V1Pod) -> str:
        name = pod.metadata.name
        if name not in self.forwards:
            command = [
                "kubectl",
                "--context",
                self.context,
                "-n",
                self.namespace,
                "port-forward",
                name,
                ":8080",
            ]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            assert process.stdout is not None
            found = re.search(r"127\.0\.0\.1:(\d+)", process.stdout.readline())
            if found is None:
                raise ScenarioError(f"kubectl port-forward to {name} printed no local port")
            self.forwards[name] = (process, f"http://127.0.0.1:{found.group(1)}")
        return self.forwards[name][1]

    def processes_of_namespace(self) -> list[int] | None:
        return None  # the kubelet's containers: gone with their Pods, which the scenario checks

    def close(self) -> None:
        for process, _ in self.forwards.values():
            process.terminate()
        self.api.close()


@pytest.fixture
def target() -> Iterator[KindTarget]:
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    assert CONTEXT is not None
    kind = KindTarget(CONTEXT, f"e2e-{uuid.uuid4().hex[:8]}")
    kubernetes.client.CoreV1Api(kind.api).create_namespace({"metadata": {"name": kind.namespace}})
    yield kind
    kubernetes.client.CoreV1Api(kind.api).delete_namespace(kind.namespace)
    kind.close()


def test_install_ramp_faults_and_uninstall_on_kind(target: KindTarget) -> None:
    tag = os.environ.get("WARMSERVE_IMAGE_TAG", "")
    values = [f"--set=operator.image.tag={tag}", f"--set=gateway.image.tag={tag}"] if tag else []
    figures = Scenario(target, values).run()
    print(summary(figures))
    assert figures.ready_before_ramp_s > 0
