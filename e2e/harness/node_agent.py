"""The kubelet's stand-in: registers Nodes with fake ``nvidia.com/gpu`` capacity, renews their Leases, and
runs the containers of every Pod bound to them as local processes.

Each Pod gets its own loopback address (``127.0.x.y``) as its Pod IP, its ``env`` with downward-API
``fieldRef``s resolved, and a kubeconfig holding a TokenRequest token of its ServiceAccount (``KUBECONFIG``;
``KUBERNETES_SERVICE_HOST``/``PORT`` name the API server's loopback address). HTTP readiness and liveness
probes become the Pod's conditions, ``restartPolicy`` is honoured, and deletion is graceful: SIGTERM, the
grace period, SIGKILL, then the Pod object is deleted with grace 0. Images are not pulled: see ``images.py``.
See docs/test-cluster.md for what is not supported.
"""

from __future__ import annotations

import datetime
import http.client
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.watch.watch import iter_resp_lines

from e2e.harness.images import UnknownImageError, local_argv
from e2e.harness.kubeconfig import write_kubeconfig
from e2e.harness.processes import signal_group, spawn, stop, stop_all

log = logging.getLogger(__name__)

HOST_IP = "127.0.0.1"
LEASE_S = 40
HEARTBEAT_S = 10.0
SYNC_S = 0.25
#: Pods synced at once: a Pod's sync waits on the API server (TokenRequest, status) and on its probes (up
#: to their timeout), and one Pod's wait must not hold back the start or the readiness of the others.
SYNC_THREADS = 16
#: The niceness of every Pod process by default. A real cluster's control plane has machines of its own, and
#: a kubelet gives each Pod CPU shares by its request; here Pods share the harness's cores with the API
#: server, and a burst of Pods starting at once must not starve it (its answers late by seconds, an operator
#: would lose its Lease). Not more by default: on a machine shared with other jobs, Pods much nicer than
#: those would hardly run.
POD_NICENESS = 5
POD_IPS = 254 * 200  # 127.0.1.1 to 127.0.200.254
TOKEN_S = 3600
NODE_PREFIX = "warmserve-node-"

#: A Pod as the API server's JSON. The agent keeps Pods as they come, never as the client's model objects:
#: building one costs milliseconds a Pod, and every worker Pod changes each second (its observed annotation),
#: in the process that also runs the benchmarks' clocks.
Pod = dict[str, Any]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodConfigError(ValueError):
    """A Pod the agent cannot run as asked (unsupported field, unresolvable env); the message says why."""


@dataclass
class Probe:
    """An HTTP probe's settings and its running counts."""

    path: str
    port: int
    period: float
    initial_delay: float
    timeout: float
    success_threshold: int
    failure_threshold: int
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0


@dataclass
class Container:
    """One container's process and the state the Pod's status reports."""

    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    readiness: Probe | None
    liveness: Probe | None
    startup: Probe | None = None
    started: bool = False  # the start-up probe has succeeded since the process started (or there is none)
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restarts: int = 0
    ready: bool = False
    terminated: dict[str, Any] | None = None
    last_terminated: dict[str, Any] | None = None
    next_start: float = 0.0


@dataclass
class PodRun:
    """What the agent runs for one Pod (keyed by its uid)."""

    namespace: str
    name: str
    uid: str
    ip: str
    directory: Path
    restart_policy: str
    containers: list[Container] = field(default_factory=list)
    waiting: tuple[str, str] | None = None  # (reason, message) when the Pod cannot start
    start_time: str = field(default_factory=_now)
    term_deadline: float | None = None
    last_status: dict[str, Any] | None = None

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [c.proc for c in self.containers if c.proc is not None and c.proc.poll() is None]


def pod_ips(start: int) -> list[str]:
    """The loopback addresses Pods get, in the order handed out: from the ``start``-th on, round the
    range. Each agent starts at a random one, so that clusters running at once on one machine (parallel
    test runs) do not give their Pods the same address, where the same port could not be bound twice and
    a probe would reach the other cluster's Pod."""
    ips = [f"127.0.{i // 254 + 1}.{i % 254 + 1}" for i in range(POD_IPS)]
    return ips[start:] + ips[:start]


class NodeAgent:
    """Runs in threads of the harness process: a Pod watch, and a sync loop (Leases) that hands each Pod
    to a pool of :data:`SYNC_THREADS` threads (its process, probes and status), one sync of a Pod at a
    time. :meth:`stop` kills every Pod process."""

    def __init__(
        self,
        client_factory: Callable[[], kubernetes.client.ApiClient],
        server: str,
        ca: Path,
        directory: Path,
        nodes: int,
        gpus_per_node: int,
        pod_niceness: int = POD_NICENESS,
    ) -> None:
        self.client = client_factory()
        self.pod_niceness = pod_niceness
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.coord = kubernetes.client.CoordinationV1Api(self.client)
        self.server = server
        self.ca = ca
        self.directory = directory
        self.nodes = [f"{NODE_PREFIX}{i}" for i in range(nodes)]
        self.gpus = gpus_per_node
        self.pods: dict[str, Pod] = {}
        self.runs: dict[str, PodRun] = {}
        self.free_ips = pod_ips(random.randrange(POD_IPS))
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.syncing: set[str] = set()  # uids of the Pods whose sync is queued or running (under lock)
        self.sync_pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="node-agent-pod")
        self.next_heartbeat = 0.0

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Registers the Nodes and starts the watch and sync threads."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            self._register(node)
        self._heartbeat()
        for target in (self._watch_loop, self._sync_loop):
            thread = threading.Thread(target=target, name=f"node-agent{target.__name__}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        """Stops the threads and kills every Pod process (the Pod objects are left as they are)."""
        self.stopping.set()
        self.wake.set()
        # The watch thread may sit in a long poll: it ends when the API server stops (a daemon thread).
        for thread in self.threads[1:]:
            thread.join(timeout=10)
        self.sync_pool.shutdown(wait=True, cancel_futures=True)
        with self.lock:
            runs = list(self.runs.values())
        stop_all([c.proc for run in runs for c in run.containers if c.proc is not None], grace=2.0)
        self.client.close()

    def pids(self, namespace: str | None = None) -> list[int]:
        """The pids of the running Pod processes (of ``namespace``'s Pods only, if given)."""
        with self.lock:
            runs = [r for r in self.runs.values() if namespace is None or r.namespace == namespace]
            return [p.pid for run in runs for p in run.alive()]

    def pod_ip(self, namespace: str, name: str) -> str | None:
        """The Pod IP the agent gave that Pod, if it runs it."""
        with self.lock:
            return next(
                (r.ip for r in self.runs.values() if (r.namespace, r.name) == (namespace, name)), None
            )

    # -- Nodes and Leases --------------------------------------------------------------------------------
    def _register(self, node: str) -> None:
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": str(self.gpus)}
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node,
                "labels": {
                    "kubernetes.io/hostname": node,
                    "kubernetes.io/os": "linux",
                    "warmserve.io/fake-gpu": "true",
                },
            },
            "status": {"capacity": capacity, "allocatable": capacity},
        }
        try:
            self.core.create_node(body)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise

    def _heartbeat(self) -> None:
        """Renews each Node's Lease and Ready condition (else the node-lifecycle controller taints it)."""
        now = _now()
        micro = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for node in self.nodes:
            self.core.patch_node_status(
                node,
                {
                    "status": {
                        "conditions": [
                            {
                                "type": "Ready",
                                "status": "True",
                                "reason": "KubeletReady",
                                "message": "warmserve node agent is posting ready status",
                                "lastHeartbeatTime": now,
                                "lastTransitionTime": now,
                            }
                        ],
                        "addresses": [
                            {"type": "InternalIP", "address": HOST_IP},
                            {"type": "Hostname", "address": node},
                        ],
                        "nodeInfo": {
                            "kubeletVersion": "warmserve-node-agent",
                            "operatingSystem": "linux",
                            "architecture": "amd64",
                            "containerRuntimeVersion": "local-process://1",
                            "kernelVersion": "",
                            "osImage": "",
                            "kubeProxyVersion": "",
                            "machineID": "",
                            "systemUUID": "",
                            "bootID": "",
                        },
                    }
                },
            )
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_S, "renewTime": micro},
            }
            try:
                self.coord.patch_namespaced_lease(node, "kube-node-lease", {"spec": lease["spec"]})
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    raise
                self.coord.create_namespaced_lease("kube-node-lease", lease)
        self.next_heartbeat = time.monotonic() + HEARTBEAT_S

    # -- watch -------------------------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        """Keeps ``self.pods`` equal to the Pods bound to our Nodes: list, then watch from its
        resourceVersion; relists on any error (410 Gone included)."""
        selector = "spec.nodeName!="
        while not self.stopping.is_set():
            try:
                response: Any = self.core.list_pod_for_all_namespaces(
                    field_selector=selector, _preload_content=False
                )
                listed = json.loads(response.data)
                with self.lock:
                    self.pods = {
                        p["metadata"]["uid"]: p
                        for p in listed["items"]
                        if p["spec"].get("nodeName") in self.nodes
                    }
                self.wake.set()
                stream: Any = self.core.list_pod_for_all_namespaces(
                    field_selector=selector,
                    watch=True,
                    resource_version=listed["metadata"]["resourceVersion"],
                    timeout_seconds=30,
                    _preload_content=False,
                )
                try:
                    for line in iter_resp_lines(stream):
                        if self.stopping.is_set():
                            break
                        if line:
                            self._seen(json.loads(line))
                finally:
                    stream.close()
                    stream.release_conn()
            except Exception:  # the API server restarting or 410: relist after a pause
                log.debug("pod watch failed; relisting", exc_info=True)
                self.stopping.wait(0.5)

    def _seen(self, event: dict[str, Any]) -> None:
        """One watch event: an ERROR ends the stream (the loop relists), a bookmark or another Node's Pod is
        passed over."""
        kind, pod = event["type"], event["object"]
        if kind == "ERROR":
            raise kubernetes.client.ApiException(status=pod.get("code"), reason=pod.get("message"))
        if kind == "BOOKMARK" or pod["spec"].get("nodeName") not in self.nodes:
            return
        with self.lock:
            if kind == "DELETED":
                self.pods.pop(pod["metadata"]["uid"], None)
            else:
                self.pods[pod["metadata"]["uid"]] = pod
        self.wake.set()

    # -- sync ----------------------------------------------------------------------------------------------
    def _sync_loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(SYNC_S)
            self.wake.clear()
            try:
                if time.monotonic() >= self.next_heartbeat:
                    self._heartbeat()
                with self.lock:
                    idle = self.pods.keys() - self.syncing
                    self.syncing |= idle
                    gone = [
                        r for uid, r in self.runs.items() if uid not in self.pods and uid not in self.syncing
                    ]
                for uid in idle:
                    self.sync_pool.submit(self._sync_one, uid)
                for run in gone:  # deleted without us (grace 0 or force)
                    self._release(run)
            except Exception:
                log.warning("node agent sync failed; retrying", exc_info=True)
                self.stopping.wait(1.0)

    def _sync_one(self, uid: str) -> None:
        """One Pod's sync in a pool thread, on the newest version the watch has seen of it (none: it is gone
        and the sync loop releases it); a failure is logged and the Pod is synced again next round."""
        try:
            with self.lock:
                newest = self.pods.get(uid)  # the watch may have seen a newer version, or the deletion
            if newest is not None:
                self._sync_pod(newest)
        except Exception:
            log.warning("node agent sync of Pod uid %s failed; retrying", uid, exc_info=True)
        finally:
            with self.lock:
                self.syncing.discard(uid)

    def _sync_pod(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        run = self.runs.get(uid)
        if pod["metadata"].get("deletionTimestamp") is not None:
            self._terminate(pod, run)
            return
        if run is None:
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return
            run = self._admit(pod)
        if run.waiting is None:
            for container in run.containers:
                self._tend(run, container)
        self._post_status(run, pod)

    def _admit(self, pod: Pod) -> PodRun:
        """Creates the Pod's run: its IP, its kubeconfig and its containers (not yet started)."""
        with self.lock:
            ip = self.free_ips.pop(0)
        meta = pod["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        run = PodRun(
            namespace=namespace,
            name=name,
            uid=uid,
            ip=ip,
            directory=self.directory / f"{namespace}_{name}_{uid[:8]}",
            restart_policy=pod["spec"].get("restartPolicy") or "Always",
        )
        run.directory.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.runs[uid] = run
        try:
            if pod["spec"].get("initContainers"):
                raise PodConfigError("init containers are not supported by the node agent")
            kubeconfig = self._pod_kubeconfig(pod, run)
            for spec in pod["spec"]["containers"]:
                env = self._env(pod, run, spec, kubeconfig)
                argv = [
                    _expand(a, env) for a in local_argv(spec["image"], spec.get("command"), spec.get("args"))
                ]
                run.containers.append(
                    Container(
                        name=spec["name"],
                        image=spec["image"],
                        argv=argv,
                        env=env,
                        readiness=_probe(spec, "readinessProbe"),
                        liveness=_probe(spec, "livenessProbe"),
                        startup=_probe(spec, "startupProbe"),
                    )
                )
        except UnknownImageError as exc:
            run.waiting = ("ErrImageNeverPull", str(exc))
        except (PodConfigError, kubernetes.client.ApiException) as exc:
            reason = exc.reason if isinstance(exc, kubernetes.client.ApiException) else str(exc)
            run.waiting = ("CreateContainerConfigError", str(reason))
        return run

    def _pod_kubeconfig(self, pod: Pod, run: PodRun) -> Path:
        """A kubeconfig with a token of the Pod's ServiceAccount, bound to the Pod (void once it is gone)."""
        request = kubernetes.client.AuthenticationV1TokenRequest(
            spec=kubernetes.client.V1TokenRequestSpec(
                audiences=[],
                expiration_seconds=TOKEN_S,
                bound_object_ref=kubernetes.client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=run.name, uid=run.uid
                ),
            )
        )
        answer = self.core.create_namespaced_service_account_token(
            pod["spec"].get("serviceAccountName") or "default", run.namespace, request
        )
        return write_kubeconfig(
            run.directory / "kubeconfig", self.server, self.ca, {"token": answer.status.token}
        )

    def _env(self, pod: Pod, run: PodRun, spec: dict[str, Any], kubeconfig: Path) -> dict[str, str]:
        port = self.server.rsplit(":", 1)[1]
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(
            KUBERNETES_SERVICE_HOST=HOST_IP,
            KUBERNETES_SERVICE_PORT=port,
            KUBERNETES_SERVICE_PORT_HTTPS=port,
            KUBECONFIG=str(kubeconfig),
            HOSTNAME=run.name,
        )
        for var in spec.get("env") or []:
            source = var.get("valueFrom")
            if source is None:
                env[var["name"]] = _expand(var.get("value") or "", env)
            elif "fieldRef" in source:
                env[var["name"]] = _field(pod, run, source["fieldRef"]["fieldPath"], var["name"])
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                cm = self.core.read_namespaced_config_map(ref["name"], run.namespace)
                env[var["name"]] = (cm.data or {})[ref["key"]]
            else:
                raise PodConfigError(
                    f"env {var['name']}: only value, fieldRef and configMapKeyRef are supported"
                )
        return env

    def _tend(self, run: PodRun, c: Container) -> None:
        """Starts, restarts and probes one container."""
        now = time.monotonic()
        if c.proc is not None and c.proc.poll() is not None:
            code = c.proc.returncode
            state = {
                "exitCode": code if code >= 0 else 128 - code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": c.started_at,
                "finishedAt": _now(),
            }
            c.proc, c.ready = None, False
            restart = run.restart_policy == "Always" or (run.restart_policy == "OnFailure" and code != 0)
            if restart:
                c.last_terminated = state
                c.restarts += 1
                c.next_start = now + min(10.0, 0.5 * 2 ** min(c.restarts, 5))
            else:
                c.terminated = state
        if c.proc is None and c.terminated is None and now >= c.next_start:
            c.proc = spawn(
                c.argv,
                log=run.directory / f"{c.name}.log",
                env=c.env,
                cwd=run.directory,
                niceness=self.pod_niceness,
            )
            c.started_at = _now()
            c.started = c.startup is None
            for probe in (c.readiness, c.liveness, c.startup):
                if probe is not None:
                    probe.successes = probe.failures = 0
                    probe.next_at = now + probe.initial_delay
        if c.proc is None:
            return
        if c.startup is not None and not c.started:  # readiness and liveness wait for it, as in Kubernetes
            if now >= c.startup.next_at:
                c.started = _run_probe(c.startup, run.ip, ready=False)
                if not c.started and c.startup.failures >= c.startup.failure_threshold:
                    signal_group(c.proc, signal.SIGKILL)
            return
        if c.readiness is None:
            c.ready = True
        elif now >= c.readiness.next_at:
            c.ready = _run_probe(c.readiness, run.ip, ready=c.ready)
        if (
            c.liveness is not None
            and now >= c.liveness.next_at
            and not _run_probe(c.liveness, run.ip, ready=True)
        ):
            signal_group(c.proc, signal.SIGKILL)

    def _terminate(self, pod: Pod, run: PodRun | None) -> None:
        """Graceful deletion: SIGTERM, SIGKILL after the grace period, then the Pod deleted with grace 0."""
        if run is not None and run.alive():
            if run.term_deadline is None:
                grace = pod["metadata"].get("deletionGracePeriodSeconds")
                grace = grace if grace is not None else pod["spec"].get("terminationGracePeriodSeconds") or 30
                run.term_deadline = time.monotonic() + grace
                for proc in run.alive():
                    signal_group(proc, signal.SIGTERM)
            elif time.monotonic() >= run.term_deadline:
                for proc in run.alive():
                    signal_group(proc, signal.SIGKILL)
            return
        try:
            self.core.delete_namespaced_pod(
                pod["metadata"]["name"],
                pod["metadata"]["namespace"],
                grace_period_seconds=0,
                body=kubernetes.client.V1DeleteOptions(
                    grace_period_seconds=0,
                    preconditions=kubernetes.client.V1Preconditions(uid=pod["metadata"]["uid"]),
                ),
            )
        except kubernetes.client.ApiException as exc:
            if exc.status not in (404, 409):
                raise
        if run is not None:
            self._release(run)

    def _release(self, run: PodRun) -> None:
        for c in run.containers:
            if c.proc is not None:
                stop(c.proc, grace=0.5)
        with self.lock:
            self.runs.pop(run.uid, None)
            self.free_ips.append(run.ip)

    def _post_status(self, run: PodRun, pod: Pod) -> None:
        status = _status(run)
        if status == run.last_status:
            return
        now = _now()
        old = {c["type"]: c for c in pod.get("status", {}).get("conditions") or []}
        for cond in status["conditions"]:
            prev = old.get(cond["type"], {})
            same = prev.get("status") == cond["status"] and prev.get("lastTransitionTime") is not None
            cond["lastTransitionTime"] = prev["lastTransitionTime"] if same else now
        try:
            self.core.patch_namespaced_pod_status(run.name, run.namespace, {"status": status})
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise
            return
        status["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]
        ]
        run.last_status = _status(run)


def _status(run: PodRun) -> dict[str, Any]:
    """The Pod status the run's state implies (conditions without their transition times)."""
    statuses = [_container_status(run, c) for c in run.containers]
    if run.waiting is not None:
        phase = "Pending"
    elif run.containers and all(c.terminated is not None for c in run.containers):
        phase = (
            "Succeeded"
            if all(c.terminated and c.terminated["exitCode"] == 0 for c in run.containers)
            else "Failed"
        )
    else:
        phase = "Running" if any(c.proc is not None or c.restarts for c in run.containers) else "Pending"
    all_ready = phase == "Running" and all(c.ready for c in run.containers)
    reason = {"reason": run.waiting[0], "message": run.waiting[1]} if run.waiting else {}

    def cond(kind: str, ok: bool) -> dict[str, Any]:
        return {"type": kind, "status": "True" if ok else "False", **({} if ok else reason)}

    return {
        "phase": phase,
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "podIP": run.ip,
        "podIPs": [{"ip": run.ip}],
        "startTime": run.start_time,
        "conditions": [
            cond("Initialized", True),
            cond("ContainersReady", all_ready),
            cond("Ready", all_ready),
        ],
        "containerStatuses": statuses
        or [
            {
                "name": n,
                "image": "",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": reason},
            }
            for n in ([] if run.waiting is None else ["pod"])
        ],
    }


def _container_status(run: PodRun, c: Container) -> dict[str, Any]:
    if c.proc is not None:
        state: dict[str, Any] = {"running": {"startedAt": c.started_at}}
    elif c.terminated is not None:
        state = {"terminated": c.terminated}
    else:
        state = {"waiting": {"reason": "CrashLoopBackOff" if c.restarts else "ContainerCreating"}}
    return {
        "name": c.name,
        "image": c.image,
        "imageID": "",
        "ready": c.ready,
        "started": c.proc is not None,
        "restartCount": c.restarts,
        "state": state,
        **({"lastState": {"terminated": c.last_terminated}} if c.last_terminated else {}),
    }


def _field(pod: Pod, run: PodRun, path: str, var: str) -> str:
    """A downward-API ``fieldRef`` value."""
    simple = {
        "metadata.name": run.name,
        "metadata.namespace": run.namespace,
        "metadata.uid": run.uid,
        "spec.nodeName": pod["spec"].get("nodeName"),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName") or "default",
        "status.podIP": run.ip,
        "status.hostIP": HOST_IP,
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        values = pod["metadata"].get(match[1]) or {}
        return str(values.get(match[2], ""))
    raise PodConfigError(f"env {var}: fieldRef {path!r} is not supported by the node agent")


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in env values, command and args (``$$`` escapes)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text
    )


def _probe(container: dict[str, Any], what: str) -> Probe | None:
    """The container's probe ``what`` (``readinessProbe``, ...), if it has one."""
    spec = container.get(what)
    if spec is None:
        return None
    http_get = spec.get("httpGet")
    if http_get is None:
        raise PodConfigError(
            f"{container['name']}.{what}: only httpGet probes are supported by the node agent"
        )
    port = http_get["port"]
    if isinstance(port, str) and not port.isdigit():
        named = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        if port not in named:
            raise PodConfigError(f"{container['name']}.{what}: no container port named {port!r}")
        port = named[port]
    return Probe(
        path=http_get.get("path") or "/",
        port=int(port),
        period=float(spec.get("periodSeconds") or 10),
        initial_delay=float(spec.get("initialDelaySeconds") or 0),
        timeout=float(spec.get("timeoutSeconds") or 1),
        success_threshold=spec.get("successThreshold") or 1,
        failure_threshold=spec.get("failureThreshold") or 3,
    )


def _run_probe(probe: Probe, ip: str, *, ready: bool) -> bool:
    """One HTTP GET (2xx/3xx is success); returns the new verdict after the thresholds."""
    probe.next_at = time.monotonic() + probe.period
    try:
        conn = http.client.HTTPConnection(ip, probe.port, timeout=probe.timeout)
        conn.request("GET", probe.path)
        ok = 200 <= conn.getresponse().status < 400
        conn.close()
    except OSError:
        ok = False
    if ok:
        probe.successes, probe.failures = probe.successes + 1, 0
        return ready or probe.successes >= probe.success_threshold
    probe.successes, probe.failures = 0, probe.failures + 1
    return ready and probe.failures < probe.failure_threshold
