"""A real Kubernetes control plane on loopback for the tests: etcd, kube-apiserver, kube-scheduler and
kube-controller-manager built from source (``e2e/cluster/build.sh``), plus a node agent standing in for the
kubelet that runs Pods as local processes. See docs/test-cluster.md."""

from e2e.harness.binaries import MissingToolError, cluster_binaries
from e2e.harness.cluster import Cluster, start_cluster

__all__ = ["Cluster", "MissingToolError", "cluster_binaries", "start_cluster"]
