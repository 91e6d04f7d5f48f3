"""Fixtures of the end-to-end scenario: the test control plane (``e2e/harness``), the CRDs and helm."""

from e2e.harness.fixtures import kube_cluster, kube_namespace
from tests.chart.helm import helm_binary
from tests.crds.test_crds_api import crds

__all__ = ["crds", "helm_binary", "kube_cluster", "kube_namespace"]
