"""The gateway's Kubernetes discovery: the workers to poll are the ready worker Pods of one namespace.

A :class:`~warmserve.protocol.list_watch.ListWatch` follows the Pods a label selector matches (by default
every WarmServe worker Pod: :func:`~warmserve.protocol.pods.worker_selector`), listing then watching, so a
Pod created, becoming ready, deleted or recreated with a new IP changes the worker list within one event.
Each Pod that is Running and Ready, has an IP and is not being deleted is reached at its container port
named ``http`` (:func:`worker_urls`); the list goes to :meth:`Discovery.set_workers` on the gateway's event
loop whenever it changes. While the API server is unreachable the last list is kept (the gateway's own
``/state`` polls still mark a dead worker down); the watch retries with a growing backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import kubernetes.client

from warmserve.protocol.kube_api import pod_lister
from warmserve.protocol.list_watch import ListWatch
from warmserve.protocol.pods import WORKER_PORT_NAME, Pod, pod_url

log = logging.getLogger(__name__)

#: Seconds one list of the API server may take before it counts as failed (then retried).
REQUEST_TIMEOUT_S = 5.0


def worker_urls(pods: Iterable[Pod]) -> tuple[str, ...]:
    """The base URLs of the worker Pods that can take requests now, sorted (see the module docstring)."""
    return tuple(sorted({url for pod in pods if (url := pod_url(pod, WORKER_PORT_NAME)) is not None}))


def follow_worker_pods(
    api: kubernetes.client.ApiClient,
    namespace: str,
    selector: str,
    set_workers: Callable[[Sequence[str]], None],
) -> ListWatch:
    """A watch of the worker Pods ``selector`` matches in ``namespace`` that calls ``set_workers`` with their
    URLs whenever those change; run it with ``async with`` (``set_workers`` runs on that event loop)."""
    where = f"{selector} in {namespace}"
    last: tuple[str, ...] | None = None

    def changed(pods: Sequence[Pod]) -> None:
        nonlocal last
        urls = worker_urls(pods)
        if urls != last:
            last = urls
            log.info("worker Pods %s: %s", where, list(urls) or "none")
            set_workers(urls)

    return ListWatch(
        pod_lister(api), namespace, selector, on_change=changed, request_timeout_s=REQUEST_TIMEOUT_S
    )
