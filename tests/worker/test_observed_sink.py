"""Observed-state reporting: the Pod annotation sink (plain HTTP, as a worker has it) against the kmock API
emulator, and the file sink."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import kmock
import kubernetes.client
import pytest

from tests.kube_emulator import KubeEmulator
from tests.worker.waiting import until
from warmserve.protocol.backoff import Backoff
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.kube_http import KubeHttp
from warmserve.protocol.state import (
    DESIRED_ANNOTATION,
    OBSERVED_ANNOTATION,
    GpuUsage,
    ObservedReplica,
    ObservedState,
    ReplicaState,
)
from warmserve.worker.observed_sink import FileSink, PodAnnotationSink, write_atomically
from warmserve.worker.pod_ref import PodRef

POD = PodRef(namespace="warmserve", name="worker-a")
FAST = Backoff(initial=0.02, maximum=0.1)


def observed(generation: int, *, inflight: int = 0) -> ObservedState:
    return ObservedState(
        worker=POD.name,
        observed_generation=generation,
        ready=True,
        gpus=(GpuUsage(index=0, capacity_bytes=1 << 30, used_bytes=1 << 20),),
        replicas=(
            ObservedReplica(
                id="llama-0",
                model="llama",
                gpus=(0,),
                state=ReplicaState.SERVING,
                since=1.5,
                inflight=inflight,
                endpoint="http://10.0.0.1:8000",
            ),
        ),
    )


def create_pod(kube: KubeEmulator) -> None:
    pod = kubernetes.client.V1Pod(
        metadata=kubernetes.client.V1ObjectMeta(name=POD.name, annotations={DESIRED_ANNOTATION: "{}"}),
        spec=kubernetes.client.V1PodSpec(
            containers=[kubernetes.client.V1Container(name="worker", image="w")]
        ),
    )
    kubernetes.client.CoreV1Api(kube.api_client()).create_namespaced_pod(POD.namespace, pod)


def annotation(kube: KubeEmulator) -> ObservedState | None:
    pod = kube.object("v1/pods", POD.namespace, POD.name)
    text = (pod or {}).get("metadata", {}).get("annotations", {}).get(OBSERVED_ANNOTATION)
    return None if text is None else ObservedState.from_json(text)


async def test_report_lands_in_the_pod_annotation_and_parses_back(kube_emulator: KubeEmulator) -> None:
    await asyncio.to_thread(create_pod, kube_emulator)
    async with PodAnnotationSink(KubeHttp.from_config(kube_emulator.url), POD, interval=0.05) as sink:
        sink.report(observed(1))
        await until(lambda: sink.written is not None)
    assert annotation(kube_emulator) == observed(1)
    pod = kube_emulator.object("v1/pods", POD.namespace, POD.name)
    assert pod is not None
    assert pod["metadata"]["annotations"][DESIRED_ANNOTATION] == "{}"  # a merge patch: the rest is kept


async def test_a_burst_of_reports_coalesces_into_few_patches_ending_with_the_newest(
    kube_emulator: KubeEmulator,
) -> None:
    await asyncio.to_thread(create_pod, kube_emulator)
    async with PodAnnotationSink(KubeHttp.from_config(kube_emulator.url), POD, interval=0.3) as sink:
        for inflight in range(50):
            sink.report(observed(1, inflight=inflight))
            await asyncio.sleep(0)  # the writer task may run between reports
        await until(lambda: sink.written == observed(1, inflight=49))
    assert annotation(kube_emulator) == observed(1, inflight=49)
    assert kube_emulator.count(kmock.method.PATCH) == 2  # the first at once, the newest one interval later


async def test_same_state_is_not_patched_twice(kube_emulator: KubeEmulator) -> None:
    await asyncio.to_thread(create_pod, kube_emulator)
    async with PodAnnotationSink(KubeHttp.from_config(kube_emulator.url), POD, interval=0.01) as sink:
        sink.report(observed(1))
        await until(lambda: sink.written is not None)
        sink.report(observed(1))
        await asyncio.sleep(0.05)  # five intervals: time enough for a needless second patch
        assert kube_emulator.count(kmock.method.PATCH) == 1
        sink.report(observed(2))
        await until(lambda: sink.written == observed(2))
    assert kube_emulator.count(kmock.method.PATCH) == 2


async def test_failed_patches_are_retried_until_one_lands_and_never_raise(
    kube_emulator: KubeEmulator,
) -> None:
    async with PodAnnotationSink(
        KubeHttp.from_config(kube_emulator.url), POD, interval=0.01, backoff=FAST
    ) as sink:
        sink.report(observed(1))  # the Pod does not exist yet: 404
        await until(lambda: sink.failures >= 2)
        assert sink.written is None
        sink.report(observed(2))
        await asyncio.to_thread(create_pod, kube_emulator)
        await until(lambda: sink.written is not None)
        assert sink.failures == 0
    assert annotation(kube_emulator) == observed(2)  # the retry carried the newest state


async def test_pending_state_gets_a_last_attempt_on_exit(kube_emulator: KubeEmulator) -> None:
    await asyncio.to_thread(create_pod, kube_emulator)
    async with PodAnnotationSink(KubeHttp.from_config(kube_emulator.url), POD, interval=60) as sink:
        sink.report(observed(1))
        await until(lambda: sink.written is not None)
        sink.report(observed(2))  # held back by the interval
    assert annotation(kube_emulator) == observed(2)


def test_file_sink_replaces_the_file_with_a_parseable_report(tmp_path: Path) -> None:
    path = tmp_path / "observed.json"
    sink = FileSink(path)
    sink.report(observed(1))
    sink.report(observed(2, inflight=3))
    assert ObservedState.from_json(path.read_text()) == observed(2, inflight=3)
    assert os.listdir(tmp_path) == ["observed.json"]  # no temporary file left behind


def test_file_sink_needs_an_existing_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidFieldError) as err:
        FileSink(tmp_path / "missing" / "observed.json")
    assert err.value.field == "observed_path"


def test_file_sink_logs_a_failed_write_instead_of_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    sink = FileSink(directory / "observed.json")
    directory.rmdir()
    sink.report(observed(1))
    assert "writing observed state" in caplog.text


def test_write_atomically_leaves_the_old_content_when_it_fails(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    write_atomically(path, json.dumps({"generation": 1}))
    with pytest.raises(TypeError):
        write_atomically(path, 42)  # type: ignore[arg-type]
    assert json.loads(path.read_text()) == {"generation": 1}
    assert os.listdir(tmp_path) == ["doc.json"]
