"""pytest fixtures for tests against the test control plane (imported by ``tests/conftest.py``):

- ``kube_cluster`` (session): the running :class:`~e2e.harness.cluster.Cluster` — ``.kubeconfig``,
  ``.server``, ``.bin_dir``, ``.api_client()``, ``.kubectl(...)``; skips naming Go when Go is absent.
- ``kube_namespace`` (per test): a fresh namespace whose ``default`` ServiceAccount exists; deleted after.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from e2e.harness.binaries import MissingToolError
from e2e.harness.cluster import Cluster, start_cluster

NAMESPACE_READY_S = 30.0


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[Cluster]:
    """One control plane for the whole test run, stopped at its end (also on Ctrl-C or a failure)."""
    try:
        cluster = start_cluster()
    except MissingToolError as exc:
        pytest.skip(f"no test control plane: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kube_namespace(kube_cluster: Cluster) -> Iterator[str]:
    """A namespace of its own for one test (its ``default`` ServiceAccount ready for Pods)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    with kube_cluster.api_client() as client:
        core = kubernetes.client.CoreV1Api(client)
        core.create_namespace({"metadata": {"name": name}})
        deadline = time.monotonic() + NAMESPACE_READY_S
        while True:
            try:
                core.read_namespaced_service_account("default", name)
                break
            except kubernetes.client.ApiException as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield name
        core.delete_namespace(name)
