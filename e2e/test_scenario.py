"""The end-to-end scenario (:mod:`e2e.scenario`, docs/e2e.md) on the local real control plane: the chart
installed with the real helm, every Pod a process the node agent runs (fake GPUs), the gateway reached at
its Pod IP. The same scenario on kind: ``e2e/kind/``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from e2e.harness.cluster import Cluster
from e2e.scenario import Scenario, summary
from tests.chart.helm import helm

pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.timeout(900)]


class LocalTarget:
    """The local control plane as the scenario's :class:`~e2e.scenario.Target`."""

    def __init__(self, cluster: Cluster, namespace: str, helm_binary: Path, home: Path) -> None:
        self.cluster, self.namespace, self.helm_binary, self.home = cluster, namespace, helm_binary, home
        self.api = cluster.api_client()

    def helm(self, *args: str) -> str:
        return helm(
            self.helm_binary,
            self.home,
            *args,
            "--namespace",
            self.namespace,
            kubeconfig=self.cluster.kubeconfig,
        )

    def gateway_url(self, pod: kubernetes.client.V1Pod) -> str:
        return f"http://{pod.status.pod_ip}:{pod.spec.containers[0].ports[0].container_port}"

    def processes_of_namespace(self) -> list[int] | None:
        assert self.cluster.agent is not None
        return self.cluster.agent.pids(self.namespace)


@pytest.fixture
def target(
    kube_cluster: Cluster, kube_namespace: str, crds: None, helm_binary: Path, tmp_path: Path
) -> Iterator[LocalTarget]:
    local = LocalTarget(kube_cluster, kube_namespace, helm_binary, tmp_path)
    yield local
    local.api.close()


def test_install_ramp_faults_and_uninstall(target: LocalTarget) -> None:
    figures = Scenario(target).run()
    print(summary(figures))
    ramp = sorted(figures.ramp_ttft_s)
    assert figures.ready_before_ramp_s > 0  # replicas loaded before the load arrived
    assert ramp and ramp[len(ramp) // 2] * 3 < figures.cold_ttft_s  # warm far below a cold start
    assert figures.requests_during_pod_deletion > 0 and figures.requests_during_operator_kill > 0
