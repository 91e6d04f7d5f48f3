"""The Pod annotation source, with the real kubernetes client against the kmock API emulator."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import kmock
import kubernetes.client
import pytest

from tests.kube_emulator import KubeEmulator
from warmserve.protocol.errors import InvalidFieldError, WarmServeError
from warmserve.protocol.state import DESIRED_ANNOTATION, DesiredState
from warmserve.worker.desired_source import (
    Backoff,
    DesiredSource,
    Ignore,
    PodAnnotationSource,
    PodRef,
    Rejection,
    kube_api_client,
)

POD = PodRef(namespace="warmserve", name="worker-a")
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
def core(kube_emulator: KubeEmulator) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(kube_emulator.api_client())


async def create_pod(core: kubernetes.client.CoreV1Api, annotations: dict[str, str]) -> None:
    body = kubernetes.client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=kubernetes.client.V1ObjectMeta(name=POD.name, annotations=annotations),
        spec=kubernetes.client.V1PodSpec(
            containers=[kubernetes.client.V1Container(name="worker", image="w")]
        ),
    )
    await asyncio.to_thread(core.create_namespaced_pod, POD.namespace, body)


async def annotate(core: kubernetes.client.CoreV1Api, text: str) -> None:
    body = {"metadata": {"annotations": {DESIRED_ANNOTATION: text}}}
    await asyncio.to_thread(
        core.patch_namespaced_pod, POD.name, POD.namespace, body, _content_type="application/merge-patch+json"
    )


async def next_state(source: DesiredSource) -> DesiredState:
    return await asyncio.wait_for(anext(aiter(source)), timeout=5)


async def until(condition: Callable[[], bool]) -> None:
    """Poll (briefly) until ``condition`` holds; fail after 5 s."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def source(kube_emulator: KubeEmulator) -> AsyncIterator[PodAnnotationSource]:
    async with PodAnnotationSource(kube_emulator.api_client(), POD, backoff=FAST) as source:
        yield source


async def test_listed_annotation_is_yielded_then_each_higher_generation(
    core: kubernetes.client.CoreV1Api, kube_emulator: KubeEmulator
) -> None:
    await create_pod(core, {DESIRED_ANNOTATION: desired(1)})
    async with PodAnnotationSource(kube_emulator.api_client(), POD, backoff=FAST) as source:
        first = await next_state(source)
        assert (first.worker, first.generation) == (POD.name, 1)
        assert first.replicas[0].gpus == (0,)
        await annotate(core, desired(2, gpus=[1]))
        second = await next_state(source)
        assert second.generation == 2
        assert second.replicas[0].gpus == (1,)
        assert source.rejection is None


async def test_pod_created_after_the_source_started_is_picked_up(
    source: PodAnnotationSource, core: kubernetes.client.CoreV1Api
) -> None:
    await create_pod(core, {DESIRED_ANNOTATION: desired(5)})
    assert (await next_state(source)).generation == 5


async def test_malformed_document_is_rejected_naming_the_field_and_previous_state_kept(
    core: kubernetes.client.CoreV1Api, kube_emulator: KubeEmulator
) -> None:
    rejections: list[Rejection] = []
    await create_pod(core, {DESIRED_ANNOTATION: desired(1)})
    api = kube_emulator.api_client()
    async with PodAnnotationSource(api, POD, backoff=FAST, on_reject=rejections.append) as source:
        assert (await next_state(source)).generation == 1
        await annotate(core, desired(2, gpus=[0, 0]))
        await until(lambda: source.rejection is not None)
        assert source.rejection is not None
        assert source.rejection.field == "replicas[0].gpus"
        assert "replicas[0].gpus" in source.rejection.message
        assert POD.name in source.rejection.origin
        assert rejections == [source.rejection]
        assert source.feed.generation == 1  # still in force
        await annotate(core, "{not json")
        await until(lambda: source.rejection is not None and source.rejection.field == "desired")
        await annotate(core, desired(3))
        assert (await next_state(source)).generation == 3  # neither bad document was yielded
        assert source.rejection is None


async def test_document_for_another_worker_is_rejected(
    source: PodAnnotationSource, core: kubernetes.client.CoreV1Api
) -> None:
    await create_pod(core, {DESIRED_ANNOTATION: desired(1).replace(POD.name, "worker-b")})
    await until(lambda: source.rejection is not None)
    assert source.rejection is not None
    assert source.rejection.field == "worker"


async def test_lower_generation_is_ignored_with_a_log_line(
    source: PodAnnotationSource, core: kubernetes.client.CoreV1Api, caplog: pytest.LogCaptureFixture
) -> None:
    await create_pod(core, {DESIRED_ANNOTATION: desired(3)})
    assert (await next_state(source)).generation == 3
    with caplog.at_level(logging.WARNING, logger="warmserve.worker.desired_source"):
        await annotate(core, desired(2))
        await until(lambda: source.feed.last_verdict == Ignore(generation=2, accepted=3))
    assert source.feed.generation == 3
    assert any("stale desired generation 2" in r.getMessage() for r in caplog.records)
    await annotate(core, desired(4))
    assert (await next_state(source)).generation == 4


async def test_watch_closed_by_the_server_is_followed_by_a_fresh_list(
    source: PodAnnotationSource, core: kubernetes.client.CoreV1Api, kube_emulator: KubeEmulator
) -> None:
    await create_pod(core, {DESIRED_ANNOTATION: desired(1)})
    assert (await next_state(source)).generation == 1
    await until(lambda: kube_emulator.open_watches() == 1)
    lists = kube_emulator.count(kmock.action.LIST)
    kube_emulator.close_watches()
    await until(lambda: kube_emulator.count(kmock.action.LIST) > lists)
    await annotate(core, desired(2))
    assert (await next_state(source)).generation == 2


async def test_gone_is_retried_with_a_fresh_list(
    core: kubernetes.client.CoreV1Api, kube_emulator: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    async def fail_first_watch() -> None:
        kube_emulator.emulator[kmock.action.WATCH][:1] << 410  # kmock: the first watch answers 410

    kube_emulator.run(fail_first_watch())
    await create_pod(core, {DESIRED_ANNOTATION: desired(1)})
    async with PodAnnotationSource(kube_emulator.api_client(), POD, backoff=FAST) as source:
        assert (await next_state(source)).generation == 1
        await annotate(core, desired(2))
        assert (await next_state(source)).generation == 2
    assert kube_emulator.count(kmock.action.WATCH) >= 2
    assert kube_emulator.count(kmock.action.LIST) >= 2
    assert any("410" in r.getMessage() for r in caplog.records)


async def test_closing_the_source_ends_iteration_promptly(kube_emulator: KubeEmulator) -> None:
    source = PodAnnotationSource(kube_emulator.api_client(), POD, backoff=FAST, watch_timeout=300)
    async with asyncio.timeout(2):
        async with source:
            await until(lambda: kube_emulator.open_watches() == 1)
        with pytest.raises(StopAsyncIteration):
            await anext(aiter(source))


def test_explicit_host_configures_a_working_client(kube_emulator: KubeEmulator) -> None:
    api = kubernetes.client.CoreV1Api(kube_api_client(kube_emulator.url))
    assert api.list_namespaced_pod(POD.namespace).items == []


@pytest.mark.parametrize("in_cluster", [True, False])
def test_missing_cluster_configuration_is_one_clear_error(
    in_cluster: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    if in_cluster:  # in a pod by the env, but no service account token mounted here
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    else:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(WarmServeError, match="no Kubernetes API configuration"):
        kube_api_client()


def test_pod_ref_from_the_downward_api_env() -> None:
    assert PodRef.from_env({"POD_NAMESPACE": "ns", "POD_NAME": "w"}) == PodRef("ns", "w")
    with pytest.raises(InvalidFieldError) as err:
        PodRef.from_env({"POD_NAMESPACE": "ns"})
    assert err.value.field == "POD_NAME"
