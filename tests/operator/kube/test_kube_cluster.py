"""``KubeCluster`` against the test control plane's real API server, with Pods the node agent runs as
processes: worker Pods found by label and pool, their observed annotations read (a missing, malformed or
misaddressed one leaves only that Pod out), the ready gateways' demand added up, desired annotations
merge-patched only when they change; and the scheduler driving a real worker Pod to serve a model, its
run counted in the operator's metrics and its cold start written as an Event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp
import kubernetes
import pytest

from e2e.harness.cluster import Cluster
from warmserve.operator.kube.cluster import KubeCluster
from warmserve.operator.kube.events import EventWriter
from warmserve.operator.kube.metrics import OperatorMetrics
from warmserve.operator.kube.operator import reporting
from warmserve.operator.planning.snapshot import Demand, ModelConfig
from warmserve.operator.policies.registry import policy_by_name
from warmserve.operator.ports import NoForecast, Observation
from warmserve.operator.scheduler import Scheduler, run
from warmserve.protocol.errors import UnavailableError
from warmserve.protocol.kube_api import kube_api_client
from warmserve.protocol.pods import worker_labels
from warmserve.protocol.state import (
    DESIRED_ANNOTATION,
    OBSERVED_ANNOTATION,
    DesiredReplica,
    DesiredState,
    GpuUsage,
    ModelSpec,
    ObservedState,
    ReplicaState,
    Role,
)

GIB = 2**30
WAIT_S = 60.0
SLEEPER = ["python", "-c", "import time; time.sleep(3600)"]
POD_IP = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
# The fake engine times a model by its shape (docs/worker-api.md).
SPEC = ModelSpec(
    name="m", weights="/cache/m", weight_bytes=2 * GIB, max_concurrency=4, engine_args={"shape": "llama3-8b"}
)

HOLD = "warmserve.io/test-hold"

T = TypeVar("T")


def report(worker: str) -> ObservedState:
    """An idle worker's report: two empty 80 GiB GPUs."""
    gpus = tuple(GpuUsage(index=i, capacity_bytes=80 * GIB, used_bytes=0) for i in range(2))
    return ObservedState(worker=worker, observed_generation=-1, ready=True, gpus=gpus, replicas=())


def desired(worker: str, generation: int) -> DesiredState:
    replica = DesiredReplica(id="m-0", model="m", gpus=(0,), role=Role.PREWARM)
    return DesiredState(worker=worker, generation=generation, models={"m": SPEC}, replicas=(replica,))


def worker_pod(name: str, pool: str, observed: str | None = None, *, gpus: int = 0) -> dict[str, Any]:
    """A worker Pod carrying ``observed`` as its report; its process only sleeps (the test writes)."""
    container: dict[str, Any] = {"name": "worker", "image": "warmserve/worker:test", "command": SLEEPER}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    annotations = {} if observed is None else {OBSERVED_ANNOTATION: observed}
    return {
        "metadata": {"name": name, "labels": worker_labels(pool), "annotations": annotations},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1},
    }


def gateway_pod(name: str, *, workers: tuple[str, ...] = (), ready: bool = True) -> dict[str, Any]:
    """A real ``warmserve gateway`` serving model ``m`` on its Pod IP, port 8080 named ``http``; with
    ``ready=False`` its readiness probe asks a path that does not exist, so it never becomes ready."""
    args = ["gateway", "--host", "$(POD_IP)", "--port", "8080", "--model", "m:4", "--hold-timeout", "60"]
    args += [a for url in workers for a in ("--worker", url)]
    container = {
        "name": "gateway",
        "image": "warmserve/gateway:test",
        "args": args,
        "env": [POD_IP],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz" if ready else "/never", "port": 8080},
            "periodSeconds": 1,
        },
    }
    return {
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "warmserve-gateway"}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1},
    }


@pytest.fixture
def core(kube_cluster: Cluster) -> Iterator[kubernetes.client.CoreV1Api]:
    with kube_cluster.api_client() as client:
        yield kubernetes.client.CoreV1Api(client)


@pytest.fixture
def api(kube_cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    """One admin client for the clusters a test builds."""
    with kube_cluster.api_client() as client:
        yield client


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


Start = Callable[..., Awaitable[KubeCluster]]


@pytest.fixture
async def clusters(api: kubernetes.client.ApiClient, session: aiohttp.ClientSession) -> AsyncIterator[Start]:
    """Starts a ``KubeCluster(api, session, namespace, **options)`` that stops with the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(namespace: str, **options: Any) -> KubeCluster:
            return await stack.enter_async_context(KubeCluster(api, session, namespace, **options))

        yield start


async def eventually(
    what: str,
    check: Callable[[], Awaitable[T | None]],
    timeout: float = WAIT_S,
    seen: Callable[[], object] = lambda: None,
) -> T:
    """Polls ``check`` until it returns something other than ``None``; fails naming ``what`` and what
    ``seen`` last saw."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result is not None:
            return result
        await asyncio.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {seen()}")


def pod_state(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> tuple[str, bool, str]:
    """Phase, readiness and IP of a Pod now."""
    status = core.read_namespaced_pod(name, namespace).status
    ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
    return status.phase, ready, status.pod_ip or ""


async def until_running(
    core: kubernetes.client.CoreV1Api, namespace: str, *names: str, ready: bool = False
) -> None:
    async def check() -> bool | None:
        states = [pod_state(core, namespace, n) for n in names]
        return True if all(p == "Running" and (r or not ready) for p, r, _ in states) else None

    await eventually(f"Pods {names} to run{' and be ready' if ready else ''}", check)


def hold_request(ip: str) -> threading.Thread:
    """Sends one completion for ``m`` to the gateway at ``ip`` from a thread; with no serving replica the
    gateway holds it (queued) until its hold timeout, or until the test's cluster is gone."""

    def send() -> None:
        body = json.dumps({"model": "m", "prompt": "hi", "max_tokens": 1}).encode()
        request = urllib.request.Request(
            f"http://{ip}:8080/v1/completions", body, {"Content-Type": "application/json"}
        )
        # Answered 503 at the hold timeout, or the Pod went away: either is fine here.
        with contextlib.suppress(urllib.error.URLError, OSError):
            urllib.request.urlopen(request, timeout=90).close()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.kube
@pytest.mark.slow
async def test_observe_reads_the_pools_reports_leaves_out_bad_ones_and_apply_writes_only_changes(
    kube_cluster: Cluster,
    kube_namespace: str,
    core: kubernetes.client.CoreV1Api,
    clusters: Start,
) -> None:
    ns = kube_namespace
    misnamed = replace(report("w-ok"), worker="someone-else").to_json()
    pods = [
        worker_pod("w-ok", "a", report("w-ok").to_json()),
        worker_pod("w-silent", "a"),
        worker_pod("w-garbage", "a", '{"worker": "w-garbage", "gpus": "many"}'),
        worker_pod("w-misnamed", "a", misnamed),
        worker_pod("w-other-pool", "b", report("w-other-pool").to_json()),
        worker_pod("w-pending", "a", report("w-pending").to_json(), gpus=99),  # fits no node: Pending
        gateway_pod("gw"),
    ]
    for pod in pods:
        core.create_namespaced_pod(ns, pod)
    core.create_namespaced_pod(ns, {"metadata": {"name": "unlabelled"}, "spec": worker_pod("x", "a")["spec"]})
    leaving = worker_pod("w-leaving", "a", report("w-leaving").to_json())
    leaving["metadata"]["finalizers"] = [HOLD]  # keeps the Pod, being deleted, until the test lets go
    core.create_namespaced_pod(ns, leaving)
    try:
        await observe_and_apply(ns, core, clusters)
    finally:
        body = {"metadata": {"finalizers": None}}
        core.patch_namespaced_pod("w-leaving", ns, body, _content_type="application/merge-patch+json")


async def observe_and_apply(ns: str, core: kubernetes.client.CoreV1Api, clusters: Start) -> None:
    running = ("w-ok", "w-silent", "w-garbage", "w-misnamed", "w-other-pool", "w-leaving", "unlabelled")
    await until_running(core, ns, *running)
    await until_running(core, ns, "gw", ready=True)
    core.delete_namespaced_pod("w-leaving", ns)

    pool_a = await clusters(ns, pool="a")
    before = time.time()
    seen = await pool_a.observe()
    assert before <= seen.now <= time.time()
    assert dict(seen.workers) == {"w-ok": report("w-ok")}
    assert dict(seen.demand) == {"m": Demand(inflight=0.0, queued=0)}
    assert set(pool_a.excluded) == {"w-silent", "w-garbage", "w-misnamed", "w-pending", "w-leaving"}
    assert pool_a.excluded["w-leaving"] == "being deleted"
    assert pool_a.excluded["w-silent"] == f"no {OBSERVED_ANNOTATION} annotation yet"
    assert pool_a.excluded["w-garbage"].startswith("gpus: expected a list")
    assert pool_a.excluded["w-misnamed"].startswith("worker: expected the Pod's name 'w-misnamed'")
    assert pool_a.excluded["w-pending"] == "phase Pending, not Running"

    every_pool = await clusters(ns)
    assert set((await every_pool.observe()).workers) == {"w-ok", "w-other-pool"}

    # apply: written to the Pod; a Pod that does not exist is returned, the others are not held up by it.
    first = desired("w-ok", 1)
    assert await pool_a.apply({"w-ok": first, "w-gone": desired("w-gone", 1)}) == {"w-gone"}
    annotations = core.read_namespaced_pod("w-ok", ns).metadata.annotations
    assert DesiredState.from_json(annotations[DESIRED_ANNOTATION]) == first

    # The same document again, as a restarted scheduler would write it: the Pod is not patched.
    fresh = await clusters(ns, pool="a")
    await fresh.observe()
    version = core.read_namespaced_pod("w-ok", ns).metadata.resource_version
    assert await fresh.apply({"w-ok": first}) == set()
    assert core.read_namespaced_pod("w-ok", ns).metadata.resource_version == version
    # A new generation is written.
    assert await fresh.apply({"w-ok": desired("w-ok", 2)}) == set()
    annotations = core.read_namespaced_pod("w-ok", ns).metadata.annotations
    assert DesiredState.from_json(annotations[DESIRED_ANNOTATION]).generation == 2

    # A worker that fixes its report is planned again, and a broken one no longer taints the others.
    body = {"metadata": {"annotations": {OBSERVED_ANNOTATION: report("w-garbage").to_json()}}}
    core.patch_namespaced_pod("w-garbage", ns, body, _content_type="application/merge-patch+json")

    async def fixed() -> Observation | None:
        seen = await pool_a.observe()
        return seen if set(seen.workers) == {"w-ok", "w-garbage"} else None

    await eventually("the fixed report to be planned again", fixed, timeout=10)
    assert "w-garbage" not in pool_a.excluded

    # A Pod removed is forgotten (the watch's DELETED event).
    core.delete_namespaced_pod("w-silent", ns, grace_period_seconds=0)

    async def forgotten() -> bool | None:
        await pool_a.observe()
        return True if "w-silent" not in pool_a.excluded else None

    await eventually("the deleted Pod to be forgotten", forgotten, timeout=10)


@pytest.mark.kube
@pytest.mark.slow
async def test_demand_is_the_sum_over_the_ready_gateways_and_none_ready_is_unavailable(
    kube_cluster: Cluster,
    kube_namespace: str,
    core: kubernetes.client.CoreV1Api,
    clusters: Start,
) -> None:
    ns = kube_namespace
    cluster = await clusters(ns)
    with pytest.raises(UnavailableError, match="no ready gateway Pod"):
        await cluster.observe()

    for pod in (gateway_pod("gw-1"), gateway_pod("gw-2"), gateway_pod("gw-never-ready", ready=False)):
        core.create_namespaced_pod(ns, pod)
    await until_running(core, ns, "gw-1", "gw-2", ready=True)
    await until_running(core, ns, "gw-never-ready")
    for name, held in (("gw-1", 2), ("gw-2", 1), ("gw-never-ready", 5)):
        for _ in range(held):
            hold_request(pod_state(core, ns, name)[2])

    async def summed() -> Observation | None:
        seen = await cluster.observe()
        return seen if seen.demand.get("m") == Demand(inflight=0.0, queued=3) else None

    # 2 + 1 held at the ready gateways; the 5 at the gateway that is not ready do not count.
    await eventually("the two ready gateways' 3 held requests", summed, timeout=20)

    # A ready gateway Pod that does not serve /demand (a plain file server: 404): the sum would be partial.
    broken = gateway_pod("gw-broken")
    container = broken["spec"]["containers"][0]
    container["args"] = ["-m", "http.server", "--bind", "$(POD_IP)", "8080"]
    container["command"] = ["python"]
    container["readinessProbe"]["httpGet"]["path"] = "/"
    core.create_namespaced_pod(ns, broken)
    await until_running(core, ns, "gw-broken", ready=True)

    async def refused() -> str | None:
        try:
            await cluster.observe()
        except UnavailableError as exc:
            return str(exc)
        return None

    assert re.match(
        r"gateway demand unreadable at http://.*:8080/demand: 404",
        await eventually("observe to refuse the broken gateway", refused),
    )


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound, never listening, so no other process can take
    it while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_an_unreachable_api_server_is_unavailable_and_nothing_is_written(
    session: aiohttp.ClientSession, refusing_port: int
) -> None:
    api = kube_api_client(f"http://127.0.0.1:{refusing_port}")
    async with KubeCluster(api, session, "ns", timeout_s=1.0) as cluster:
        which = r"Pods app\.kubernetes\.io/name=warmserve-worker in namespace ns unknown now: "
        with pytest.raises(UnavailableError, match=which):
            await cluster.observe()
        assert await cluster.apply({"w": desired("w", 1), "v": desired("v", 1)}) == {"w", "v"}
    assert not [t for t in threading.enumerate() if t.name.startswith("pods ns/")]  # stopped with the block


class Cut:
    """A TCP relay from a port of 127.0.0.1 to the API server that the test can cut and mend: cutting closes
    the listener and every open connection (a network partition the client sees as resets and refusals);
    mending listens again on the same port."""

    def __init__(self, server: str) -> None:
        host, port = server.removeprefix("https://").rsplit(":", 1)
        self.target = (host, int(port))
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self.mend()

    def mend(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept(), frees the port
        self._listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.mark.kube
@pytest.mark.slow
async def test_a_cut_from_the_api_server_is_unavailable_and_the_mended_view_misses_nothing(
    kube_cluster: Cluster,
    kube_namespace: str,
    core: kubernetes.client.CoreV1Api,
    session: aiohttp.ClientSession,
) -> None:
    ns = kube_namespace
    for pod in (worker_pod("w", "a", report("w").to_json()), gateway_pod("gw")):
        core.create_namespaced_pod(ns, pod)
    await until_running(core, ns, "w")
    await until_running(core, ns, "gw", ready=True)
    relay = Cut(kube_cluster.server)
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kube_cluster.kubeconfig), client_configuration=config)  # type: ignore[no-untyped-call]
    config.host = f"https://127.0.0.1:{relay.port}"
    with kubernetes.client.ApiClient(config) as api:
        async with KubeCluster(api, session, ns, timeout_s=2.0) as cluster:
            assert (await cluster.observe()).workers["w"].observed_generation == -1

            relay.cut()

            async def refused() -> str | None:
                try:
                    await cluster.observe()
                except UnavailableError as exc:
                    return str(exc)
                return None

            assert "unknown now" in await eventually("observe to see the cut", refused, timeout=10)
            # Meanwhile the worker reports a new generation; the cache, cut off, cannot have seen it.
            later = replace(report("w"), observed_generation=7).to_json()
            body = {"metadata": {"annotations": {OBSERVED_ANNOTATION: later}}}
            core.patch_namespaced_pod("w", ns, body, _content_type="application/merge-patch+json")
            relay.mend()

            async def caught_up() -> ObservedState | None:
                with contextlib.suppress(UnavailableError):
                    seen = (await cluster.observe()).workers.get("w")
                    return seen if seen is not None and seen.observed_generation == 7 else None
                return None

            await eventually("the mended cache to hold the change made during the cut", caught_up, timeout=20)
    relay.cut()


def real_worker_pod(name: str) -> dict[str, Any]:
    """A real ``warmserve worker --kube`` with the fake engine on two fake GPUs, following its own Pod."""
    env = [
        POD_IP,
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    args = ["worker", "--kube", "--gpus", "2", "--gpu-memory", "16GiB", "--host", "$(POD_IP)"]
    container = {
        "name": "worker",
        "image": "warmserve/worker:test",
        "args": [*args, "--port", "8000", "--engine", "fake", "--speed", "0"],
        "env": env,
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8000}, "periodSeconds": 1},
    }
    return {
        "metadata": {"name": name, "labels": worker_labels("p")},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 5},
    }


def let_workers_follow_their_pods(kube_cluster: Cluster, namespace: str) -> None:
    """What a worker's ServiceAccount needs: read and watch its Pod, patch its observed annotation."""
    with kube_cluster.api_client() as client:
        rbac = kubernetes.client.RbacAuthorizationV1Api(client)
        rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]}
        rbac.create_namespaced_role(namespace, {"metadata": {"name": "worker"}, "rules": [rule]})
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "worker"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "worker"},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
            },
        )


@pytest.mark.kube
@pytest.mark.slow
async def test_the_scheduler_over_kube_cluster_makes_a_real_worker_pod_serve_its_model(
    kube_cluster: Cluster,
    kube_namespace: str,
    api: kubernetes.client.ApiClient,
    core: kubernetes.client.CoreV1Api,
    clusters: Start,
    session: aiohttp.ClientSession,
) -> None:
    ns = kube_namespace
    let_workers_follow_their_pods(kube_cluster, ns)
    core.create_namespaced_pod(ns, real_worker_pod("worker-0"))
    await until_running(core, ns, "worker-0", ready=True)
    worker_url = f"http://{pod_state(core, ns, 'worker-0')[2]}:8000"
    core.create_namespaced_pod(ns, gateway_pod("gw", workers=(worker_url,)))
    await until_running(core, ns, "gw", ready=True)

    cluster = await clusters(ns, pool="p")
    models = {"m": ModelConfig(spec=SPEC, load_bandwidth_bytes_per_s=4 * GIB, min_instances=1)}
    entry = policy_by_name("warmserve")
    assert entry.policy is not None
    scheduler = Scheduler(models, entry.policy, entry.initial_state, NoForecast(), entry.scores)
    # What the operator does after each tick: metrics counted, decisions queued as Events (no
    # ModelDeployment here: they regard the worker Pod).
    metrics = OperatorMetrics()
    events = EventWriter(api, ns, lambda model: None, metrics, flush_s=0.5)
    writer = asyncio.create_task(events.run())
    loop = asyncio.create_task(
        run(cluster, scheduler, tick_s=0.2, on_tick=reporting(scheduler, metrics, events))
    )
    try:

        def annotations() -> dict[str, str]:
            return core.read_namespaced_pod("worker-0", ns).metadata.annotations or {}

        async def serving() -> ObservedState | None:
            text = annotations().get(OBSERVED_ANNOTATION)
            state = ObservedState.from_json(text) if text is not None else None
            serves = state is not None and any(
                (r.model, r.state) == ("m", ReplicaState.SERVING) for r in state.replicas
            )
            # An order of this scheduler applied (a worker starts at generation -1, the scheduler at 1):
            # a replica may report serving a report before its generation is (its promotion's task ends).
            return state if serves and state is not None and state.observed_generation >= 1 else None

        what = "worker-0 to report m serving, its order applied, in its observed annotation"
        state = await eventually(what, serving, seen=annotations)
        assert state.worker == "worker-0" and state.error == ""
        assert state.observed_generation <= scheduler.generation
        ordered = DesiredState.from_json(annotations()[DESIRED_ANNOTATION])
        assert [(r.model, r.role) for r in ordered.replicas] == [("m", Role.SERVE)]
        assert not loop.done()
        # The request goes through the gateway to the replica the scheduler placed.
        gateway = pod_state(core, ns, "gw")[2]
        async with session.post(
            f"http://{gateway}:8080/v1/completions", json={"model": "m", "prompt": "hi", "max_tokens": 2}
        ) as answer:
            assert answer.status == 200, await answer.text()
        # The run, counted: one cold start of m (its first instance, min_instances=1), every tick timed.
        samples = metrics.registry.get_sample_value
        assert samples("warmserve_operator_cold_starts_total", {"model": "m"}) == 1
        assert samples("warmserve_operator_plan_actions_total", {"action": "cold_start"}) == 1
        assert samples("warmserve_operator_prewarm_hit_ratio") == 0.0
        ticks = samples("warmserve_operator_ticks_total") or 0
        assert ticks >= 2 and samples("warmserve_operator_tick_duration_seconds_count") == ticks

        async def cold_start_event() -> Any:
            listed = kubernetes.client.EventsV1Api(api).list_namespaced_event(ns).items
            return next((e for e in listed if e.reason == "ColdStart"), None)

        event = await eventually("a ColdStart Event", cold_start_event)
        assert (event.regarding.kind, event.regarding.name, event.type) == ("Pod", "worker-0", "Normal")
        assert event.note.startswith("cold start replica m@worker-0:") and "min_instances=1" in event.note
    finally:
        loop.cancel()
        writer.cancel()
        await asyncio.gather(loop, writer, return_exceptions=True)
