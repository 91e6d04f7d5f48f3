"""The Kubernetes API behaviour the Pod channels rely on, as tests/kube_emulator.py serves it.

The desired source needs list resourceVersions, watches that resume from them without losing or
replaying writes, 410 for expired versions and server-side stream ends; the observed sink needs merge
patches that keep other annotations and a 404 for a missing Pod; kopf (later) needs create stamps,
generations and conflicts. Each is checked here with the real client, so a change of kmock that
breaks one shows up as an emulator failure, not as a puzzling channel failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import kubernetes.watch
import pytest

from tests.kube_emulator import KubeEmulator

NS = "warmserve"
MERGE = "application/merge-patch+json"


@pytest.fixture
def core(kube_emulator: KubeEmulator) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(kube_emulator.api_client())


def pod(name: str, **annotations: str) -> kubernetes.client.V1Pod:
    return kubernetes.client.V1Pod(
        metadata=kubernetes.client.V1ObjectMeta(name=name, annotations=annotations or None),
        spec=kubernetes.client.V1PodSpec(containers=[kubernetes.client.V1Container(name="c", image="i")]),
    )


def meta(obj: kubernetes.client.V1Pod) -> kubernetes.client.V1ObjectMeta:
    assert obj.metadata is not None
    return obj.metadata


def version(obj: kubernetes.client.V1Pod) -> int:
    return int(meta(obj).resource_version or "")


def list_version(listing: kubernetes.client.V1PodList) -> str | None:
    assert listing.metadata is not None
    return listing.metadata.resource_version


def watch(core: kubernetes.client.CoreV1Api, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Raw watch events (the client gives up after the server's timeout, as asked)."""
    stream = kubernetes.watch.Watch().stream(  # type: ignore[no-untyped-call]
        core.list_namespaced_pod, NS, _request_timeout=(5, 10), **kwargs
    )
    for event in stream:
        yield {"type": event["type"], **event["raw_object"]}


def test_create_stamps_identity_and_versions_and_answers_201(core: kubernetes.client.CoreV1Api) -> None:
    created, status, _ = core.create_namespaced_pod_with_http_info(NS, pod("a"))
    other = core.create_namespaced_pod(NS, pod("b"))
    assert status == 201
    assert meta(created).uid and meta(created).uid != meta(other).uid
    assert meta(created).creation_timestamp is not None
    assert meta(created).generation == 1
    assert version(other) > version(created)
    listing = core.list_namespaced_pod(NS)
    assert listing.kind == "PodList"
    assert list_version(listing) == meta(other).resource_version


def test_patches_bump_versions_generation_only_for_the_spec_and_noops_nothing(
    core: kubernetes.client.CoreV1Api,
) -> None:
    created = core.create_namespaced_pod(NS, pod("a", keep="me"))
    annotated = core.patch_namespaced_pod(
        "a", NS, {"metadata": {"annotations": {"x": "1"}}}, _content_type=MERGE
    )
    assert meta(annotated).annotations == {"keep": "me", "x": "1"}
    assert version(annotated) > version(created)
    assert meta(annotated).generation == 1
    respec = core.patch_namespaced_pod("a", NS, {"spec": {"priority": 5}}, _content_type=MERGE)
    assert meta(respec).generation == 2
    again = core.patch_namespaced_pod("a", NS, {"spec": {"priority": 5}}, _content_type=MERGE)
    assert meta(again).resource_version == meta(respec).resource_version


def test_stale_writes_conflict_and_a_failing_json_patch_test_leaves_the_object(
    core: kubernetes.client.CoreV1Api, kube_emulator: KubeEmulator
) -> None:
    created = core.create_namespaced_pod(NS, pod("a"))
    core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"v": "2"}}}, _content_type=MERGE)
    stale = {"metadata": {"resourceVersion": meta(created).resource_version, "labels": {"v": "3"}}}
    with pytest.raises(kubernetes.client.ApiException) as conflict:
        core.patch_namespaced_pod("a", NS, stale, _content_type=MERGE)
    assert conflict.value.status == 409
    test_old: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta(created).resource_version},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x"]},
    ]
    with pytest.raises(kubernetes.client.ApiException) as invalid:
        core.patch_namespaced_pod("a", NS, test_old)
    assert invalid.value.status == 422
    stored = kube_emulator.object("v1/pods", NS, "a")
    assert stored is not None
    assert stored["metadata"]["labels"] == {"v": "2"}
    assert "finalizers" not in stored["metadata"]


def test_patching_a_missing_pod_is_404(core: kubernetes.client.CoreV1Api) -> None:
    with pytest.raises(kubernetes.client.ApiException) as missing:
        core.patch_namespaced_pod("nope", NS, {"metadata": {"labels": {"a": "b"}}}, _content_type=MERGE)
    assert missing.value.status == 404


def test_watch_sends_only_what_is_newer_than_its_version_and_ends_on_its_timeout(
    core: kubernetes.client.CoreV1Api,
) -> None:
    core.create_namespaced_pod(NS, pod("a"))
    version = list_version(core.list_namespaced_pod(NS))
    core.create_namespaced_pod(NS, pod("b"))
    started = time.monotonic()
    events = list(watch(core, resource_version=version, timeout_seconds=1))
    assert [(e["type"], e["metadata"]["name"]) for e in events] == [("ADDED", "b")]
    assert 0.9 < time.monotonic() - started < 5


def test_field_selector_narrows_lists_and_watches(core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("a"))
    core.create_namespaced_pod(NS, pod("b"))
    listed = core.list_namespaced_pod(NS, field_selector="metadata.name=b").items
    assert [meta(p).name for p in listed] == ["b"]
    others = core.list_namespaced_pod(NS, field_selector="metadata.name!=b").items
    assert [meta(p).name for p in others] == ["a"]
    events = list(watch(core, field_selector="metadata.name=a", timeout_seconds=1))
    assert [e["metadata"]["name"] for e in events] == ["a"]


def test_expired_version_gets_410(core: kubernetes.client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    created = core.create_namespaced_pod(NS, pod("a"))
    kube_emulator.compact()
    with pytest.raises(kubernetes.client.ApiException) as gone:
        list(watch(core, resource_version=meta(created).resource_version, timeout_seconds=1))
    assert gone.value.status == 410


def test_writes_reach_a_watch_however_soon_they_follow_its_start(
    core: kubernetes.client.CoreV1Api, kube_emulator: KubeEmulator
) -> None:
    core.create_namespaced_pod(NS, pod("a"))
    seen: list[str] = []

    def follow() -> None:
        for event in watch(core, timeout_seconds=3):
            seen.append(event["metadata"].get("labels", {}).get("n", "-"))
            if len(seen) == 21:
                kube_emulator.close_watches()

    reader = threading.Thread(target=follow)
    reader.start()
    for n in range(20):
        core.patch_namespaced_pod("a", NS, {"metadata": {"labels": {"n": str(n)}}}, _content_type=MERGE)
    reader.join(timeout=5)
    assert not reader.is_alive()
    # The snapshot may already hold some patches; after it every later patch arrives, in order.
    assert seen[-1] == "19"
    tail = [int(n) for n in seen if n != "-"]
    assert tail == list(range(tail[0], 20))
