"""The operator's floors (issue 14), measured against the test control plane's real API server.

Starts the control plane (``e2e.harness``: etcd, kube-apiserver, scheduler, controller-manager, and the node
agent running every Pod as local processes; docs/test-cluster.md), a gateway Pod (the scheduler plans only
while one is ready) and ``warmserve operator`` as a process with the admin kubeconfig (a Lease of
:data:`LEASE_S`), then measures:

1. **Scale.** From the moment the first object is sent, one ``WorkerPool`` of ``--pods`` worker Pods
   (fake engine, fake GPUs, ``speed: 0`` so loads take no simulated time) and ``--models`` small
   ``ModelDeployment`` resources (``minReplicas: 1``, 1 GiB fake weights) until everything is reconciled:
   every ModelDeployment has ``status.observedGeneration`` and its ``Ready`` condition's
   ``observedGeneration`` equal to its ``metadata.generation`` and ``Ready=True`` (so a replica of it is
   serving), every worker Pod is ready, and the WorkerPool is ``Ready=True``. Floor: 30 s. Also printed:
   when each milestone of :data:`PHASES` was first seen, and per worker Pod the seconds from its creation
   to its container's start and from there to Ready (where the time goes), and the requests the API server
   received meanwhile by sender, verb and resource (its audit log, :mod:`e2e.harness.audit`: counts that
   do not depend on the machine's load). The operator's peak RSS over the run (``VmHWM`` in
   ``/proc/<pid>/status``): floor 300 MB.
2. **Latency.** A desired-annotation change reaching the worker's action, over ``--changes`` changes. A probe
   worker Pod (the pool's own worker manifest, labelled so that the operator does not manage it, with a
   ServiceAccount of its own allowed its own Pod only) runs beside the pool while the operator keeps its
   models; the benchmark writes its ``warmserve.io/desired`` annotation with the merge patch
   ``KubeCluster.apply`` sends, alternately prewarming a model on GPU 0 and releasing it, each time a new
   generation. The clock starts when the patch returns. **Applied**: the worker's ``GET /state`` (polled every
   5 ms) reports ``observed_generation`` at least the new generation, i.e. the worker saw the annotation
   through its watch, accepted it and finished acting on it. Floor: p99 1 s. **Reported**: the worker's
   ``warmserve.io/observed`` annotation, followed by a watch, carries that generation (the round trip the
   scheduler sees at its next tick; no floor, printed for context: the worker patches its report at most once
   a second, so it includes that coalescing).

Usage, from the repo root (which holds ``e2e``):
``python -m bench.bench_operator [--pods 32] [--models 200] [--changes 100] [--quick] [--json]``.
The machine's load average is printed at the start and the end: figures on a shared machine are
pessimistic.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes.watch
import urllib3.exceptions

from e2e.harness import audit
from e2e.harness.cluster import Cluster, free_port, start_cluster
from warmserve.operator.resources import parse_model_deployment, parse_worker_pool
from warmserve.protocol.resource_names import GROUP, VERSION
from warmserve.protocol.state import (
    DESIRED_ANNOTATION,
    OBSERVED_ANNOTATION,
    DesiredReplica,
    DesiredState,
    ObservedState,
    Role,
)

REPO = Path(__file__).resolve().parents[1]
READY_FLOOR_S = 30.0
RSS_FLOOR_MB = 300.0
LATENCY_FLOOR_S = 1.0
NAMESPACE = "bench"  # the namespace main() creates
POOL = "bench"
PROBE = "bench-probe"
WAIT_S = 300.0
#: The operator's --lease-duration. One operator runs: a failover is not what is measured, and with the
#: default 15 s an API server slowed by the Pods starting beside it (answers late by 5 s and more on a
#: loaded 2-core machine) cost the operator its Lease, so that it exited and nothing became Ready.
LEASE_S = 60
#: The Pod processes' niceness: the control plane first, as on a cluster whose control plane has machines
#: of its own (with the node agent's default 5, 32 workers starting at once still took most of the CPU,
#: and sending the objects took 50 s instead of 33).
POD_NICENESS = 19
#: The user agent of this benchmark's own requests (its polls), told apart in the audit log.
BENCH_AGENT = "bench"
#: --quick: worker Pods, ModelDeployments, changes.
QUICK = (2, 5, 5)


@dataclass
class Sampler:
    """The operator process's resident memory: the peak the kernel keeps (``VmHWM``)."""

    process: subprocess.Popen[bytes]
    peak_mb: float = 0.0

    def sample(self) -> bool:
        """Reads the peak; False once the operator has exited (it no longer has one, nor will anything
        become Ready)."""
        if self.process.poll() is not None:
            return False
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
        return True


@dataclass
class ScaleResult:
    """Seconds from the first object sent: all sent, each milestone first seen by a poll (:data:`PHASES`;
    absent: not in time), and the worker Pods' own timestamps (:func:`pod_lags`)."""

    apply_s: float = 0.0
    began: float = 0.0  # epoch seconds, for the audit log
    ended: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    lags: dict[str, tuple[float, float]] = field(default_factory=dict)
    all_ready_s: float | None = None
    last: str = ""


#: The milestones of the scale phase, in the order they are expected: each is a test of one poll.
PHASES = (
    "worker Pods created",
    "worker Pods running",
    "worker Pods ready",
    "WorkerPool Ready",
    "ModelDeployments with a status of their generation",
    "first ModelDeployment Ready",
    "half the ModelDeployments Ready",
    "ModelDeployments Ready",
)


@dataclass
class Poll:
    """What one poll of the scale phase counted."""

    pods: int
    running: int
    ready_pods: int
    restarts: int
    pool_ready: bool
    current_models: int
    ready_models: int

    def reached(self, pods: int, models: int) -> dict[str, bool]:
        """Each milestone of :data:`PHASES`: whether this poll shows it."""
        return dict(
            zip(
                PHASES,
                (
                    self.pods >= pods,
                    self.running >= pods,
                    self.ready_pods >= pods,
                    self.pool_ready,
                    self.current_models >= models,
                    self.ready_models >= 1,
                    self.ready_models >= models / 2,
                    self.ready_models >= models,
                ),
                strict=True,
            )
        )


@dataclass
class Figures:
    """What one run measured: the scale phase, the operator's peak RSS, and each change's latencies."""

    scaled: ScaleResult
    rss_peak_mb: float
    applied: list[float] = field(default_factory=list)
    reported: list[float] = field(default_factory=list)
    requests: Counter[audit.Kind] = field(default_factory=Counter)
    log_tail: list[str] = field(default_factory=list)


def pool_manifest(pods: int, models: int) -> dict[str, Any]:
    """A pool of fake-GPU worker Pods whose loads take no simulated time, each asking for little CPU, with
    a GPU for every model: the planner gives each serving replica a GPU of its own."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WorkerPool",
        "metadata": {"name": POOL},
        "spec": {
            "pods": pods,
            "gpusPerPod": max(2, math.ceil(models / pods)),
            "poolBytes": "80Gi",
            "engine": "fake",
            "fakeGpu": True,
            "fake": {"gpuProfile": "h100", "tier": "host", "speed": 0},
            "loadBandwidth": "20Gi",
            "template": {"resources": {"requests": {"cpu": "10m", "memory": "64Mi"}}},
        },
    }


def model_manifest(index: int) -> dict[str, Any]:
    """A small always-on model (1 GiB of fake weights, a small KV cache) on the bench pool."""
    name = model_name(index)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "engine": "fake",
            "model": {
                "servedName": name,
                "uri": f"fake://{name}",
                "format": "fake",
                "weightBytes": "1Gi",
                "kvBytesPerToken": 1024,
                "engineArgs": {"shape": "llama2-7b"},
            },
            "serving": {"maxConcurrency": 4, "contextLength": 1024},
            "minReplicas": 1,
            "maxReplicas": 1,
            "pools": [POOL],
        },
    }


def model_name(index: int) -> str:
    return f"m-{index:04d}"


def gateway_manifest() -> dict[str, Any]:
    """A real ``warmserve gateway`` on its Pod IP: the scheduler reads the demand from it (zero here)."""
    pod_ip = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    container = {
        "name": "gateway",
        "image": "warmserve/gateway:bench",
        "args": ["gateway", "--host", "$(POD_IP)", "--port", "8080", "--model", model_name(0)],
        "env": [pod_ip],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
    }
    return {
        "metadata": {"name": "gateway", "labels": {"app.kubernetes.io/name": "warmserve-gateway"}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1},
    }


def wait(what: str, check: Callable[[], Any], timeout: float = WAIT_S, every: float = 0.1) -> Any:
    """Polls ``check`` until it returns something truthy; :class:`TimeoutError` naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def model_current(md: Mapping[str, Any]) -> bool:
    """The status describes the current generation (the operator has written it since the last change)."""
    return bool((md.get("status") or {}).get("observedGeneration") == md["metadata"].get("generation"))


def model_ready(md: Mapping[str, Any]) -> bool:
    """Ready=True, and both the status and the condition describe the current generation."""
    ready = condition(md, "Ready")
    return (
        model_current(md)
        and ready.get("status") == "True"
        and ready.get("observedGeneration") == md["metadata"].get("generation")
    )


def pod_ready(pod: Mapping[str, Any]) -> bool:
    return (
        pod["metadata"].get("deletionTimestamp") is None and condition(pod, "Ready").get("status") == "True"
    )


def list_pods(api: kubernetes.client.ApiClient, ns: str, **selectors: str) -> list[dict[str, Any]]:
    """The Pods as the API server's JSON (the client's model objects cost milliseconds per Pod)."""
    response: Any = kubernetes.client.CoreV1Api(api).list_namespaced_pod(
        ns, _preload_content=False, **selectors
    )
    items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return items


def list_models(api: kubernetes.client.ApiClient, ns: str) -> list[dict[str, Any]]:
    custom = kubernetes.client.CustomObjectsApi(api)
    response: Any = custom.list_namespaced_custom_object(
        GROUP, VERSION, ns, "modeldeployments", _preload_content=False
    )
    items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return items


def install_crds(cluster: Cluster) -> None:
    """``kubectl apply`` the CRDs (a no-op when they are there) and wait until both are Established."""
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    for plural in ("workerpools", "modeldeployments"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{plural}.{GROUP}", "--timeout=30s")


def create_namespace(api: kubernetes.client.ApiClient, ns: str) -> None:
    """The namespace, once its ``default`` ServiceAccount exists (no Pod can be created before)."""
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": ns}})
    wait("the namespace's default ServiceAccount", lambda: core.list_namespaced_service_account(ns).items)


def start_operator(
    cluster: Cluster, ns: str, log: Path, tick_s: float, status_interval_s: float, lease_s: int
) -> subprocess.Popen[bytes]:
    """``warmserve operator`` for ``ns`` with the admin kubeconfig, its output appended to ``log``."""
    args = ["--namespace", ns, "--tick", str(tick_s), "--status-interval", str(status_interval_s)]
    args += ["--lease-duration", str(lease_s)]
    # Probes on a free loopback port: the default 0.0.0.0:8081 clashes with any other operator on the host.
    args += ["--health-host", "127.0.0.1", "--health-port", str(free_port())]
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "warmserve.cli", "operator", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    started = "Initial authentication has finished"

    def running() -> bool:
        text = log.read_text(errors="replace")
        if process.poll() is not None:
            tail = "\n".join(text.splitlines()[-20:])
            raise RuntimeError(f"the operator exited {process.returncode} before it started:\n{tail}")
        return started in text

    wait("the operator to start", running, timeout=60)
    return process


def scale(api: kubernetes.client.ApiClient, ns: str, pods: int, models: int, sampler: Sampler) -> ScaleResult:
    """Send the pool and the models, then follow them until all are reconciled (the module docstring)."""
    custom = kubernetes.client.CustomObjectsApi(api)
    result = ScaleResult(began=time.time())
    began = time.monotonic()
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "workerpools", pool_manifest(pods, models))
    with ThreadPoolExecutor(8) as creating:
        for _ in creating.map(
            lambda i: custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, "modeldeployments", model_manifest(i)
            ),
            range(models),
        ):
            pass
    result.apply_s = time.monotonic() - began
    printed = began
    workers: list[dict[str, Any]] = []
    while (now := time.monotonic() - began) < WAIT_S:
        if not sampler.sample():
            result.last += f"; the operator exited ({sampler.process.returncode}) at {now:.1f} s"
            break
        mds = list_models(api, ns)
        workers = list_pods(api, ns, label_selector=f"warmserve.io/pool={POOL}")
        pool = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workerpools", POOL)
        poll = Poll(
            pods=len(workers),
            running=sum(p.get("status", {}).get("phase") == "Running" for p in workers),
            ready_pods=sum(pod_ready(p) for p in workers),
            restarts=sum(
                c.get("restartCount", 0)
                for p in workers
                for c in p.get("status", {}).get("containerStatuses") or []
            ),
            pool_ready=condition(pool, "Ready").get("status") == "True",
            current_models=sum(model_current(md) for md in mds),
            ready_models=sum(model_ready(md) for md in mds),
        )
        for phase, reached in poll.reached(pods, models).items():
            if reached:
                result.phases.setdefault(phase, now)
        result.last = (
            f"{now:5.1f} s: {poll.ready_pods}/{pods} worker Pods ready ({poll.restarts} restarts), "
            f"WorkerPool Ready={poll.pool_ready}, {poll.ready_models}/{models} ModelDeployments Ready"
        )
        if time.monotonic() - printed >= 5.0:
            printed = time.monotonic()
            print(result.last, flush=True)
        if all(poll.reached(pods, models).values()):
            result.all_ready_s = now
            break
        time.sleep(0.5)  # each poll lists every ModelDeployment: not more often, on a machine this full
    result.lags = pod_lags(workers)
    result.ended = time.time()
    return result


def pod_lags(pods: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Median and maximum over the worker Pods of the seconds (the API's timestamps have whole seconds)
    from the Pod's creation to its container's start (the node agent saw it and spawned the process), and
    from that start to the Pod's Ready condition (the worker's start-up, then the probes and the status
    report). Pods not ready are left out."""
    created_started: list[float] = []
    started_ready: list[float] = []
    for pod in pods:
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        started = statuses[0].get("state", {}).get("running", {}).get("startedAt")
        ready = condition(pod, "Ready")
        if started and ready.get("status") == "True":
            created_started.append(_stamp(started) - _stamp(pod["metadata"]["creationTimestamp"]))
            started_ready.append(_stamp(ready["lastTransitionTime"]) - _stamp(started))
    return {
        what: (percentile(values, 0.5), max(values))
        for what, values in (
            ("Pod created to container started", created_started),
            ("container started to Pod Ready", started_ready),
        )
        if values
    }


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Reports:
    """The first moment a watch saw each generation in the probe Pod's observed annotation."""

    def __init__(self, api: kubernetes.client.ApiClient, ns: str) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.ns = ns
        self.seen: dict[int, float] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        """Watches until stopped; a watch the API server ends with an error (a loaded one answers 500,
        context deadline exceeded) is started again (each listing reports the current annotation)."""
        while not self.stopping.is_set():
            try:
                self._watch()
            except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError):
                self.stopping.wait(0.1)

    def _watch(self) -> None:
        watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        for event in watch.stream(
            self.core.list_namespaced_pod,
            self.ns,
            field_selector=f"metadata.name={PROBE}",
            timeout_seconds=5,
        ):
            at = time.monotonic()
            text = (event["object"].metadata.annotations or {}).get(OBSERVED_ANNOTATION)
            if text:
                generation = ObservedState.from_json(text).observed_generation
                with self.lock:
                    self.seen.setdefault(generation, at)
            if self.stopping.is_set():
                watch.stop()

    def first_at_least(self, generation: int) -> float | None:
        with self.lock:
            times = [t for g, t in self.seen.items() if g >= generation]
        return min(times) if times else None


def probe_worker(api: kubernetes.client.ApiClient, ns: str) -> str:
    """Start the probe: the pool's own worker manifest under another name and a label the operator does
    not select (so nothing but this benchmark writes its desired state), running as a ServiceAccount whose
    Role names the probe's Pod only (the pool's names only the pool's Pods); its ``/state`` URL once
    ready."""
    custom = kubernetes.client.CustomObjectsApi(api)
    pool = parse_worker_pool(custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workerpools", POOL))
    probe = replace(pool, name=PROBE, uid="")
    core, rbac = kubernetes.client.CoreV1Api(api), kubernetes.client.RbacAuthorizationV1Api(api)
    account, role, binding = probe.worker_rbac([PROBE])
    core.create_namespaced_service_account(ns, account)
    rbac.create_namespaced_role(ns, role)
    rbac.create_namespaced_role_binding(ns, binding)
    manifest = probe.worker_pod(0, "bench")
    manifest["metadata"] = {"name": PROBE, "labels": {"app.kubernetes.io/name": "warmserve-bench-probe"}}
    core.create_namespaced_pod(ns, manifest)

    def ready() -> dict[str, Any] | None:
        (pod,) = list_pods(api, ns, field_selector=f"metadata.name={PROBE}")
        return pod if pod_ready(pod) else None

    return f"http://{wait('the probe worker ready', ready)['status']['podIP']}:{pool.port}/state"


def latency(api: kubernetes.client.ApiClient, ns: str, changes: int) -> tuple[list[float], list[float]]:
    """Applied and reported latencies (seconds) of ``changes`` changes of the probe's desired state."""
    url = probe_worker(api, ns)
    core = kubernetes.client.CoreV1Api(api)
    custom = kubernetes.client.CustomObjectsApi(api)
    md = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "modeldeployments", model_name(0))
    model = parse_model_deployment(md).spec
    prewarm = (DesiredReplica(id="probe-0", model=model.name, gpus=(0,), role=Role.PREWARM),)
    reports = Reports(api, ns)
    reports.thread.start()
    applied: list[float] = []
    reported: list[float] = []

    def state_applied(generation: int) -> bool:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(json.loads(answer.read())["observed_generation"]) >= generation

    try:
        for g in range(1, changes + 1):
            replicas = prewarm if g % 2 else ()
            desired = DesiredState(worker=PROBE, generation=g, models={model.name: model}, replicas=replicas)
            body = {"metadata": {"annotations": {DESIRED_ANNOTATION: desired.to_json()}}}
            core.patch_namespaced_pod(PROBE, ns, body, _content_type="application/merge-patch+json")
            written = time.monotonic()
            wait(f"the probe to apply generation {g}", lambda g=g: state_applied(g), timeout=30, every=0.005)
            applied.append(time.monotonic() - written)
            seen = wait(f"the report of generation {g}", lambda g=g: reports.first_at_least(g), 30, 0.005)
            reported.append(seen - written)
            time.sleep(0.1)
    finally:
        reports.stopping.set()
    return applied, reported


def measure(
    cluster: Cluster,
    ns: str,
    *,
    pods: int,
    models: int,
    changes: int,
    log: Path,
    tick_s: float = 1.0,
    status_interval_s: float = 2.0,
    lease_s: int = LEASE_S,
) -> Figures:
    """Both phases in namespace ``ns`` (existing, with its default ServiceAccount) of a running cluster;
    the operator's output goes to ``log``, and it is stopped (SIGTERM) before this returns."""
    install_crds(cluster)
    with cluster.api_client() as api:
        api.user_agent = BENCH_AGENT
        kubernetes.client.CoreV1Api(api).create_namespaced_pod(ns, gateway_manifest())
        wait("the gateway Pod ready", lambda: any(pod_ready(p) for p in list_pods(api, ns)))
        operator = start_operator(cluster, ns, log, tick_s, status_interval_s, lease_s)
        try:
            sampler = Sampler(operator)
            figures = Figures(scale(api, ns, pods, models, sampler), 0.0)
            if figures.scaled.all_ready_s is not None:
                figures.applied, figures.reported = latency(api, ns, changes)
            sampler.sample()
            figures.rss_peak_mb = sampler.peak_mb
        finally:
            operator.send_signal(signal.SIGTERM)
            operator.wait(30)
    audit_log = cluster.workdir / "audit.log"
    if audit_log.exists():
        figures.requests = audit.count_requests(audit_log, figures.scaled.began, figures.scaled.ended)
    figures.log_tail = log.read_text(errors="replace").splitlines()[-20:]
    return figures


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=32, help="worker Pods in the pool (default %(default)s)")
    parser.add_argument("--models", type=int, default=200, help="ModelDeployments (default %(default)s)")
    parser.add_argument(
        "--changes", type=int, default=100, help="desired changes timed (default %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test: 2 Pods, 5 models, 5 changes")
    parser.add_argument("--tick", type=float, default=1.0, help="the operator's --tick (default %(default)s)")
    parser.add_argument(
        "--status-interval",
        type=float,
        default=2.0,
        help="the operator's --status-interval (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    if args.quick:
        args.pods, args.models, args.changes = QUICK
    print(f"load average at start: {load()} ({os.cpu_count()} CPUs)", flush=True)
    cluster = start_cluster(nodes=2, gpus_per_node=0, pod_niceness=POD_NICENESS, audit=True)
    try:
        with cluster.api_client() as api:
            create_namespace(api, NAMESPACE)
        figures = measure(
            cluster,
            NAMESPACE,
            pods=args.pods,
            models=args.models,
            changes=args.changes,
            log=cluster.workdir / "operator.log",
            tick_s=args.tick,
            status_interval_s=args.status_interval,
        )
    finally:
        cluster.stop()
    print_figures(args, figures)


def print_figures(args: argparse.Namespace, figures: Figures) -> None:
    scaled = figures.scaled
    print(
        f"{args.pods} worker Pods, {args.models} ModelDeployments; all objects sent in {scaled.apply_s:.1f} s"
    )
    print(f"  last seen: {scaled.last}")
    print("  phases (seconds from the first object sent, as the polls saw them):")
    for phase, at in sorted(scaled.phases.items(), key=lambda item: item[1]):
        print(f"    {at:5.1f} s  {phase}")
    for phase in PHASES:
        if phase not in scaled.phases:
            print(f"    never  {phase}")
    for what, (median, most) in scaled.lags.items():
        print(f"  per worker Pod, {what}: median {median:.0f} s, max {most:.0f} s")
    if figures.requests:
        print("  API requests received during the scale phase (audit log), the most frequent kinds:")
        print("\n".join(audit.table(figures.requests)))
    done = scaled.all_ready_s
    print(
        f"reconciled to Ready: {f'not within {WAIT_S:.0f} s' if done is None else f'{done:.1f} s'} "
        f"(floor {READY_FLOOR_S:.0f} s: {verdict(done is not None and done <= READY_FLOOR_S)})"
    )
    rss = figures.rss_peak_mb
    print(f"operator peak RSS: {rss:.0f} MB (floor {RSS_FLOOR_MB:.0f} MB: {verdict(rss <= RSS_FLOOR_MB)})")
    out: dict[str, Any] = {
        "pods": args.pods,
        "models": args.models,
        "apply_s": scaled.apply_s,
        "ready_s": done,
        "phases_s": scaled.phases,
        "rss_peak_mb": rss,
        "requests": sum(figures.requests.values()),
    }
    if figures.applied:
        p50, p99 = percentile(figures.applied, 0.5), percentile(figures.applied, 0.99)
        r50, r99 = percentile(figures.reported, 0.5), percentile(figures.reported, 0.99)
        print(
            f"desired change applied by the worker, {len(figures.applied)} changes: p50 {p50 * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms (floor p99 {LATENCY_FLOOR_S:.0f} s: {verdict(p99 <= LATENCY_FLOOR_S)})"
        )
        print(f"  reported back in its observed annotation: p50 {r50 * 1000:.0f} ms, p99 {r99 * 1000:.0f} ms")
        out |= {"applied_p50_s": p50, "applied_p99_s": p99, "reported_p50_s": r50, "reported_p99_s": r99}
    else:
        print("latency not measured: the scale phase did not finish. Operator log (last lines):")
        print("\n".join(figures.log_tail))
    print(f"load average at end: {load()}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
