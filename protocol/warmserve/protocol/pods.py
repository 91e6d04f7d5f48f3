"""How WarmServe's Pods are labelled and found: the one convention for whoever creates them (the operator's
WorkerPool handler), whoever reads them (``KubeCluster``, the gateway's discovery) and the tests.

Worker Pods carry :func:`worker_labels` (``app.kubernetes.io/name: warmserve-worker``,
``app.kubernetes.io/managed-by: warmserve``, ``warmserve.io/pool: <pool>``); gateway Pods carry
``app.kubernetes.io/name: warmserve-gateway`` and serve ``GET /demand`` on their container port named
:data:`GATEWAY_PORT_NAME`. Pure: strings only, no client.
"""

from __future__ import annotations

NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
POOL_LABEL = "warmserve.io/pool"

WORKER_APP = "warmserve-worker"
GATEWAY_APP = "warmserve-gateway"
MANAGED_BY = "warmserve"

#: The gateway container's port that serves ``/demand`` (and the OpenAI API).
GATEWAY_PORT_NAME = "http"
#: The port used when a gateway Pod names none: ``warmserve gateway``'s own default.
GATEWAY_DEFAULT_PORT = 8080

GATEWAY_SELECTOR = f"{NAME_LABEL}={GATEWAY_APP}"


def worker_labels(pool: str) -> dict[str, str]:
    """The labels of a worker Pod of ``pool``."""
    return {NAME_LABEL: WORKER_APP, MANAGED_BY_LABEL: MANAGED_BY, POOL_LABEL: pool}


def worker_selector(pool: str | None = None) -> str:
    """The label selector of the worker Pods of ``pool``, or of every pool."""
    selector = f"{NAME_LABEL}={WORKER_APP}"
    return selector if pool is None else f"{selector},{POOL_LABEL}={pool}"
