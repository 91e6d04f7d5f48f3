"""The worker's plain HTTP client of the API server (``warmserve.protocol.kube_http``): what it refuses to
read in a kubeconfig, and how long a quiet watch is held, against the test control plane's real API server.
Its list, watch and patch of a worker's own Pod are tested with the worker (tests/worker/
test_desired_source_kube.py, test_observed_sink.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness.cluster import Cluster
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.kube_http import KubeHttp, load_endpoint, pod_path


def kubeconfig(tmp_path: Path, *, user: dict[str, Any], cluster: dict[str, Any] | None = None) -> Path:
    """A one-context kubeconfig with ``user`` and ``cluster`` as given."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": cluster or {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": user}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("user", "field"),
    [
        ({"exec": {"command": "aws"}}, "users[u].user.exec"),
        ({"auth-provider": {"name": "gcp"}}, "users[u].user.auth-provider"),
        ({"username": "admin", "password": "secret"}, "users[u].user.username"),
        (
            {"client-certificate-data": "Y2VydA==", "client-key-data": "a2V5"},
            "users[u].user.client-certificate-data",
        ),
    ],
)
def test_a_kubeconfig_user_it_cannot_speak_for_is_refused_naming_the_field(
    tmp_path: Path, user: dict[str, Any], field: str
) -> None:
    path = kubeconfig(tmp_path, user=user)
    with pytest.raises(InvalidFieldError, match="unsupported") as refused:
        load_endpoint(environ={"KUBECONFIG": str(path)})
    assert f"{path}: {field}" in str(refused.value)


def test_a_kubeconfig_cluster_without_a_server_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, user={"token": "t"}, cluster={"insecure-skip-tls-verify": True})
    with pytest.raises(InvalidFieldError, match="the API server's URL") as refused:
        load_endpoint(environ={"KUBECONFIG": str(path)})
    assert f"{path}: clusters[k].cluster.server" in str(refused.value)


def test_a_kubeconfig_entry_holding_no_mapping_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, user={"token": "t"})
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["contexts"][0]["context"] = "k"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(InvalidFieldError, match="a mapping") as refused:
        load_endpoint(environ={"KUBECONFIG": str(path)})
    assert f"{path}: contexts[c].context" in str(refused.value)


@pytest.mark.kube
def test_a_quiet_watch_stays_open_past_its_connect_timeout(
    kube_cluster: Cluster, kube_namespace: str
) -> None:
    """A (connect, read) timeout bounds the connection and then each read: a watch on which nothing
    happens stays open until the server ends it at ``timeoutSeconds``, rather than failing once the
    connect timeout has passed (a worker would list its Pod again every few seconds)."""
    with KubeHttp(load_endpoint(environ={"KUBECONFIG": str(kube_cluster.kubeconfig)})) as api:
        started = time.monotonic()
        response = api.request(
            "GET",
            pod_path(kube_namespace),
            query={"watch": True, "timeoutSeconds": 2},
            timeout=(0.5, 10.0),
            stream=True,
        )
        try:
            received = b"".join(response.stream())
        finally:
            response.release_conn()
        held = time.monotonic() - started
    assert received == b""  # no Pod in the namespace: no event
    assert 1.5 < held < 10.0
