"""Starts and stops the control plane: etcd, kube-apiserver, kube-scheduler, kube-controller-manager and the
node agent, all on 127.0.0.1 with free ports, with an admin kubeconfig for clients and ``kubectl``."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes

from e2e.harness.audit import HARNESS_AGENT, audit_flags
from e2e.harness.binaries import Binaries, cluster_binaries
from e2e.harness.certs import CertPair, Pki, generate_pki
from e2e.harness.kubeconfig import write_kubeconfig
from e2e.harness.node_agent import POD_NICENESS, SYNC_THREADS, NodeAgent
from e2e.harness.processes import spawn, stop_all

SERVICE_CIDR = "10.0.0.0/24"
READY_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cert_user(pair: CertPair) -> dict[str, str]:
    return {"client-certificate": str(pair.cert), "client-key": str(pair.key)}


@dataclass
class Cluster:
    """A running control plane. ``kubeconfig`` is the admin's (group ``system:masters``)."""

    workdir: Path
    bin_dir: Path
    binaries: Binaries
    pki: Pki
    server: str
    kubeconfig: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    agent: NodeAgent | None = None

    def api_client(self) -> kubernetes.client.ApiClient:
        """A new admin client (close it, or use it as a context manager), sending the user agent
        :data:`~e2e.harness.audit.HARNESS_AGENT`."""
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=config)  # type: ignore[no-untyped-call]
        # Connections kept for reuse: enough for the node agent's Pod syncs, each a thread of one client.
        config.connection_pool_maxsize = SYNC_THREADS
        client = kubernetes.client.ApiClient(config)
        client.user_agent = HARNESS_AGENT  # told apart from the operator's in the audit log
        return client

    def kubectl(self, *args: str, check: bool = True) -> str:
        """Runs the cluster's ``kubectl`` with the admin kubeconfig and returns its stdout."""
        done = subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def pids(self) -> list[int]:
        """The pids of the control-plane processes and of every Pod process the node agent runs."""
        own = [p.pid for p in self.processes.values() if p.poll() is None]
        return own + (self.agent.pids() if self.agent else [])

    def stop(self) -> None:
        """Stops the node agent (its Pod processes first), then the control plane; removes the work dir."""
        if self.agent is not None:
            self.agent.stop()
        stop_all(list(self.processes.values()), grace=3.0)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _wait_ready(url: str, pki: Pki, procs: dict[str, subprocess.Popen[bytes]], timeout: float) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} while starting (see its log)")
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s: {last}")


def start_cluster(
    nodes: int = 2,
    gpus_per_node: int = 4,
    workdir: Path | None = None,
    pod_niceness: int = POD_NICENESS,
    audit: bool = False,
) -> Cluster:
    """Builds (or reuses) the binaries, starts the control plane and a node agent with ``nodes`` Nodes of
    ``gpus_per_node`` ``nvidia.com/gpu`` each (Pod processes at ``pod_niceness``), and waits until the API
    server's ``/readyz`` answers and the Nodes are registered. ``audit``: the API server logs every request
    to ``<workdir>/audit.log`` (:mod:`e2e.harness.audit`). On failure everything started is stopped and
    the error names the component; each component's log is ``<workdir>/<name>.log``."""
    binaries = cluster_binaries()
    work = workdir or Path(tempfile.mkdtemp(prefix="warmserve-cluster-"))
    pki = generate_pki(work / "pki")
    api_port = free_port()
    server = f"https://127.0.0.1:{api_port}"
    cluster = Cluster(
        workdir=work,
        bin_dir=binaries.k8s,
        binaries=binaries,
        pki=pki,
        server=server,
        kubeconfig=write_kubeconfig(work / "admin.kubeconfig", server, pki.ca.cert, _cert_user(pki.admin)),
    )
    try:
        _start_components(cluster, api_port, audit_flags(work) if audit else [])
        cluster.agent = NodeAgent(
            cluster.api_client, server, pki.ca.cert, work / "pods", nodes, gpus_per_node, pod_niceness
        )
        cluster.agent.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start_components(cluster: Cluster, api_port: int, apiserver_flags: list[str]) -> None:
    work, pki, bins = cluster.workdir, cluster.pki, cluster.binaries
    etcd_url = f"http://127.0.0.1:{free_port()}"
    peer_url = f"http://127.0.0.1:{free_port()}"
    procs = cluster.processes
    procs["etcd"] = spawn(
        [
            str(bins.etcd / "etcd"),
            "--name=default",
            f"--data-dir={work / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync=true",
        ],
        log=work / "etcd.log",
    )
    procs["kube-apiserver"] = spawn(
        [
            str(bins.k8s / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={work / 'apiserver-certs'}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-account-issuer={cluster.server}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            *apiserver_flags,
        ],
        log=work / "kube-apiserver.log",
    )
    _wait_ready(f"{cluster.server}/readyz", pki, procs, READY_TIMEOUT_S)
    for name, pair, extra in (
        ("kube-scheduler", pki.scheduler, []),
        (
            "kube-controller-manager",
            pki.controller_manager,
            [
                f"--root-ca-file={pki.ca.cert}",
                f"--service-account-private-key-file={pki.sa_key}",
                "--use-service-account-credentials=true",
            ],
        ),
    ):
        kubeconfig = write_kubeconfig(
            work / f"{name}.kubeconfig", cluster.server, pki.ca.cert, _cert_user(pair)
        )
        procs[name] = spawn(
            [
                str(bins.k8s / name),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                *extra,
            ],
            log=work / f"{name}.log",
        )


@contextlib.contextmanager
def running_cluster(nodes: int = 2, gpus_per_node: int = 4) -> Iterator[Cluster]:
    """``start_cluster`` as a context manager: the cluster stops on exit, also on an exception or Ctrl-C."""
    cluster = start_cluster(nodes, gpus_per_node)
    try:
        yield cluster
    finally:
        cluster.stop()
