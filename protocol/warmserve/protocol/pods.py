"""How WarmServe's Pods are labelled and found: the one convention for whoever creates them (the operator's
WorkerPool handler), whoever reads them (``KubeCluster``, the gateway's discovery) and the tests.

Worker Pods carry :func:`worker_labels` (``app.kubernetes.io/name: warmserve-worker``,
``app.kubernetes.io/managed-by: warmserve``, ``warmserve.io/pool: <pool>``); gateway Pods carry
``app.kubernetes.io/name: warmserve-gateway`` and serve ``GET /demand`` on their container port named
:data:`GATEWAY_PORT_NAME`; worker Pods serve the worker API on theirs named :data:`WORKER_PORT_NAME`.
:func:`pod_url` is the one rule for where a Pod is reached. Pure: strings and plain Pod documents, no client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from warmserve.protocol.resource_names import GROUP

#: A Pod as the API server's JSON document.
Pod = Mapping[str, Any]

NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
POOL_LABEL = f"{GROUP}/pool"

WORKER_APP = "warmserve-worker"
GATEWAY_APP = "warmserve-gateway"
MANAGED_BY = "warmserve"

#: The gateway container's port that serves ``/demand`` (and the OpenAI API).
GATEWAY_PORT_NAME = "http"
#: The port used when a gateway Pod names none: ``warmserve gateway``'s own default.
GATEWAY_DEFAULT_PORT = 8080

GATEWAY_SELECTOR = f"{NAME_LABEL}={GATEWAY_APP}"

#: The worker container's port that serves the worker API (``/state``, the OpenAI API): the operator's
#: WorkerPool handler names it so.
WORKER_PORT_NAME = "http"


def worker_labels(pool: str) -> dict[str, str]:
    """The labels of a worker Pod of ``pool``."""
    return {NAME_LABEL: WORKER_APP, MANAGED_BY_LABEL: MANAGED_BY, POOL_LABEL: pool}


def worker_selector(pool: str | None = None) -> str:
    """The label selector of the worker Pods of ``pool``, or of every pool."""
    selector = f"{NAME_LABEL}={WORKER_APP}"
    return selector if pool is None else f"{selector},{POOL_LABEL}={pool}"


def pod_url(pod: Pod, port_name: str, default_port: int | None = None) -> str | None:
    """``http://IP:PORT`` of a Pod that is Running and Ready, has an IP and is not being deleted; else None.

    The port is the container port named ``port_name``, else ``default_port``; a Pod with neither is left
    out too (None). An IPv6 address is bracketed."""
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    ip = status.get("podIP")
    if status.get("phase") != "Running" or not ready or not ip:
        return None
    if pod["metadata"].get("deletionTimestamp") is not None:
        return None
    named = [
        p.get("containerPort")
        for c in (pod.get("spec") or {}).get("containers") or []
        for p in c.get("ports") or []
        if p.get("name") == port_name
    ]
    port = named[0] if named else default_port
    if port is None:
        return None
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"
