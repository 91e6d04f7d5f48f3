"""The Pod annotation source, with the worker's plain HTTP client (``KubeHttp``) against the test control
plane's real API server (``kube_cluster``, a namespace per test; the test writes with the real kubernetes
client), and against the kmock emulator for the faults the real server cannot be made to show on demand: a
watch closed by the server, a 410 on the first watch, counting open watches (see tests/kube_emulator.py).
Both clients are built by the one rule of configuration (``config_source``), checked here for each."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import kmock
import kubernetes.client
import pytest
import yaml

from e2e.harness.cluster import Cluster
from tests.kube_emulator import KubeEmulator
from tests.worker.waiting import next_state, until
from warmserve.protocol.backoff import Backoff
from warmserve.protocol.errors import InvalidFieldError, WarmServeError
from warmserve.protocol.kube_api import kube_api_client
from warmserve.protocol.kube_http import HTTP_ERRORS, ApiError, KubeHttp, load_endpoint, pod_path
from warmserve.protocol.state import DESIRED_ANNOTATION
from warmserve.worker.desired_feed import Ignore, Rejection
from warmserve.worker.desired_source import PodAnnotationSource
from warmserve.worker.pod_ref import PodRef

POD = PodRef(namespace="warmserve", name="worker-a")  # the emulator's; on the real server: `pod` below
FAST = Backoff(initial=0.02, maximum=0.2)


def desired(generation: int, *, gpus: list[int] | None = None) -> str:
    return json.dumps(
        {
            "worker": POD.name,
            "generation": generation,
            "models": {"llama": {"weights": "/cache/llama", "weight_bytes": 1000}},
            "replicas": [{"id": "llama-0", "model": "llama", "gpus": gpus or [0], "role": "prewarm"}],
        }
    )


@pytest.fixture
def emulator_core(kube_emulator: KubeEmulator) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(kube_emulator.api_client())


@pytest.fixture
def api(kube_cluster: Cluster) -> Iterator[KubeHttp]:
    """The worker's client, configured as the worker is: by the kubeconfig ``KUBECONFIG`` names."""
    with KubeHttp(load_endpoint(environ={"KUBECONFIG": str(kube_cluster.kubeconfig)})) as client:
        yield client


@pytest.fixture
def core(kube_cluster: Cluster) -> Iterator[kubernetes.client.CoreV1Api]:
    with kube_cluster.api_client() as client:
        yield kubernetes.client.CoreV1Api(client)


@pytest.fixture
def pod(kube_namespace: str) -> PodRef:
    return PodRef(namespace=kube_namespace, name=POD.name)


async def create_pod(
    core: kubernetes.client.CoreV1Api, annotations: dict[str, str], pod: PodRef = POD
) -> None:
    body = kubernetes.client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=kubernetes.client.V1ObjectMeta(name=POD.name, annotations=annotations),
        spec=kubernetes.client.V1PodSpec(
            containers=[kubernetes.client.V1Container(name="worker", image="w")]
        ),
    )
    await asyncio.to_thread(core.create_namespaced_pod, pod.namespace, body)


async def annotate(core: kubernetes.client.CoreV1Api, text: str, pod: PodRef = POD) -> None:
    body = {"metadata": {"annotations": {DESIRED_ANNOTATION: text}}}
    await asyncio.to_thread(
        core.patch_namespaced_pod, pod.name, pod.namespace, body, _content_type="application/merge-patch+json"
    )


@pytest.fixture
async def source(api: KubeHttp, pod: PodRef) -> AsyncIterator[PodAnnotationSource]:
    async with PodAnnotationSource(api, pod, backoff=FAST) as source:
        yield source


@pytest.fixture
async def emulator_source(kube_emulator: KubeEmulator) -> AsyncIterator[PodAnnotationSource]:
    async with PodAnnotationSource(KubeHttp.from_config(kube_emulator.url), POD, backoff=FAST) as source:
        yield source


@pytest.mark.kube
async def test_listed_annotation_is_yielded_then_each_higher_generation(
    core: kubernetes.client.CoreV1Api, api: KubeHttp, pod: PodRef
) -> None:
    await create_pod(core, {DESIRED_ANNOTATION: desired(1)}, pod)
    async with PodAnnotationSource(api, pod, backoff=FAST) as source:
        first = await next_state(source)
        assert (first.worker, first.generation) == (POD.name, 1)
        assert first.replicas[0].gpus == (0,)
        await annotate(core, desired(2, gpus=[1]), pod)
        second = await next_state(source)
        assert second.generation == 2
        assert second.replicas[0].gpus == (1,)
        assert source.rejection is None


@pytest.mark.kube
async def test_pod_created_after_the_source_started_is_picked_up(
    source: PodAnnotationSource, core: kubernetes.client.CoreV1Api, pod: PodRef
) -> None:
    await create_pod(core, {DESIRED_ANNOTATION: desired(5)}, pod)
    assert (await next_state(source)).generation == 5


@pytest.mark.kube
async def test_malformed_document_is_rejected_naming_the_field_and_previous_state_kept(
    core: kubernetes.client.CoreV1Api, api: KubeHttp, pod: PodRef
) -> None:
    rejections: list[Rejection] = []
    await create_pod(core, {DESIRED_ANNOTATION: desired(1)}, pod)
    async with PodAnnotationSource(api, pod, backoff=FAST, on_reject=rejections.append) as source:
        assert (await next_state(source)).generation == 1
        await annotate(core, desired(2, gpus=[0, 0]), pod)
        await until(lambda: source.rejection is not None)
        assert source.rejection is not None
        assert source.rejection.field == "replicas[0].gpus"
        assert "replicas[0].gpus" in source.rejection.message
        assert POD.name in source.rejection.origin
        assert rejections == [source.rejection]
        assert source.feed.generation == 1  # still in force
        await annotate(core, "{not json", pod)
        await until(lambda: source.rejection is not None and source.rejection.field == "desired")
        await annotate(core, desired(3), pod)
        assert (await next_state(source)).generation == 3  # neither bad document was yielded
        assert source.rejection is None


@pytest.mark.kube
async def test_document_for_another_worker_is_rejected(
    source: PodAnnotationSource, core: kubernetes.client.CoreV1Api, pod: PodRef
) -> None:
    await create_pod(core, {DESIRED_ANNOTATION: desired(1).replace(POD.name, "worker-b")}, pod)
    await until(lambda: source.rejection is not None)
    assert source.rejection is not None
    assert source.rejection.field == "worker"


@pytest.mark.kube
async def test_lower_generation_is_ignored_with_a_log_line(
    source: PodAnnotationSource,
    core: kubernetes.client.CoreV1Api,
    pod: PodRef,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await create_pod(core, {DESIRED_ANNOTATION: desired(3)}, pod)
    assert (await next_state(source)).generation == 3
    with caplog.at_level(logging.WARNING, logger="warmserve.worker.desired_feed"):
        await annotate(core, desired(2), pod)
        await until(lambda: source.feed.last_verdict == Ignore(generation=2, accepted=3))
    assert source.feed.generation == 3
    assert any("stale desired generation 2" in r.getMessage() for r in caplog.records)
    await annotate(core, desired(4), pod)
    assert (await next_state(source)).generation == 4


async def test_watch_closed_by_the_server_is_followed_by_a_fresh_list(
    emulator_source: PodAnnotationSource,
    emulator_core: kubernetes.client.CoreV1Api,
    kube_emulator: KubeEmulator,
) -> None:
    await create_pod(emulator_core, {DESIRED_ANNOTATION: desired(1)})
    assert (await next_state(emulator_source)).generation == 1
    await until(lambda: kube_emulator.open_watches() == 1)
    lists = kube_emulator.count(kmock.action.LIST)
    kube_emulator.close_watches()
    await until(lambda: kube_emulator.count(kmock.action.LIST) > lists)
    await annotate(emulator_core, desired(2))
    assert (await next_state(emulator_source)).generation == 2


async def test_gone_is_retried_with_a_fresh_list(
    emulator_core: kubernetes.client.CoreV1Api, kube_emulator: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    async def fail_first_watch() -> None:
        kube_emulator.emulator[kmock.action.WATCH][:1] << 410  # kmock: the first watch answers 410

    caplog.set_level(logging.INFO)  # a 410 is routine (an expired resourceVersion): told at INFO
    kube_emulator.run(fail_first_watch())
    await create_pod(emulator_core, {DESIRED_ANNOTATION: desired(1)})
    async with PodAnnotationSource(KubeHttp.from_config(kube_emulator.url), POD, backoff=FAST) as source:
        assert (await next_state(source)).generation == 1
        await annotate(emulator_core, desired(2))
        assert (await next_state(source)).generation == 2
    assert kube_emulator.count(kmock.action.WATCH) >= 2
    assert kube_emulator.count(kmock.action.LIST) >= 2
    assert any("410" in r.getMessage() for r in caplog.records)


async def test_closing_the_source_ends_iteration_promptly(kube_emulator: KubeEmulator) -> None:
    source = PodAnnotationSource(
        KubeHttp.from_config(kube_emulator.url), POD, backoff=FAST, watch_timeout=300
    )
    async with asyncio.timeout(2):
        async with source:
            await until(lambda: kube_emulator.open_watches() == 1)
        with pytest.raises(StopAsyncIteration):
            await anext(aiter(source))


def list_pods(client: kubernetes.client.ApiClient | KubeHttp, namespace: str) -> list[Any]:
    """The Pods of ``namespace`` through either client: the operator's or the worker's."""
    if isinstance(client, KubeHttp):
        listing = client.request("GET", pod_path(namespace), timeout=10).json()
        return list(listing["items"])
    return list(kubernetes.client.CoreV1Api(client).list_namespaced_pod(namespace).items)


#: The two clients built by one rule of configuration: the operator's (``kubernetes``) and the worker's.
CLIENTS: dict[str, Callable[[str | None], kubernetes.client.ApiClient | KubeHttp]] = {
    "kubernetes": kube_api_client,
    "http": KubeHttp.from_config,
}


@pytest.mark.parametrize("client", CLIENTS)
def test_explicit_host_configures_a_working_client(client: str, kube_emulator: KubeEmulator) -> None:
    with CLIENTS[client](kube_emulator.url) as api:
        assert list_pods(api, POD.namespace) == []


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("in_cluster", [True, False])
def test_missing_cluster_configuration_is_one_clear_error(
    client: str, in_cluster: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    if in_cluster:  # in a pod by the env, but no service account token mounted here
        monkeypatch.delenv("KUBECONFIG", raising=False)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    else:
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(WarmServeError, match="no Kubernetes API configuration"):
        CLIENTS[client](None)


@pytest.mark.kube
@pytest.mark.parametrize("client", CLIENTS)
def test_kubeconfig_named_by_the_env_wins_over_in_cluster_config(
    client: str, kube_cluster: Cluster, kube_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the test cluster's node agent gives every Pod process (no token at the in-cluster path).
    monkeypatch.setenv("KUBECONFIG", str(kube_cluster.kubeconfig))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", kube_cluster.server.rsplit(":", 1)[1])
    with CLIENTS[client](None) as api:
        assert list_pods(api, kube_namespace) == []


@pytest.mark.kube
def test_worker_client_is_refused_what_its_token_is_not_allowed(
    kube_cluster: Cluster, kube_namespace: str, tmp_path: Path
) -> None:
    """A token the API server does not know: 401, an ``ApiError`` (one of the errors the channels retry)."""
    kubeconfig = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    kubeconfig["users"][0]["user"] = {"token": "not-a-token"}
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    api = KubeHttp(load_endpoint(environ={"KUBECONFIG": str(tmp_path / "kubeconfig")}))
    with api, pytest.raises(ApiError) as refused:
        list_pods(api, kube_namespace)
    assert refused.value.status == 401
    assert isinstance(refused.value, HTTP_ERRORS)


def test_pod_ref_from_the_downward_api_env() -> None:
    assert PodRef.from_env({"POD_NAMESPACE": "ns", "POD_NAME": "w"}) == PodRef("ns", "w")
    with pytest.raises(InvalidFieldError) as err:
        PodRef.from_env({"POD_NAMESPACE": "ns"})
    assert err.value.field == "POD_NAME"
