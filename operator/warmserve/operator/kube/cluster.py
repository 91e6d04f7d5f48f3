"""``KubeCluster``: the scheduler's :class:`~warmserve.operator.ports.Cluster` port over the Kubernetes API.

The same semantics as the local runner's ``LocalCluster``, with Pods for processes (docs/kube-cluster.md):

- ``observe`` reads the worker Pods of one namespace (optionally one pool), found by label and followed
  by a list-then-watch (:class:`~warmserve.protocol.list_watch.ListWatch`), and each one's
  ``warmserve.io/observed`` annotation; and it reads ``GET /demand`` from every ready gateway Pod and adds
  the reports up (each request passes through exactly one gateway, so the sum is the cluster's demand).
  The clock is epoch seconds, the one workers stamp ``since`` with.
- ``apply`` merge-patches each named worker Pod's ``warmserve.io/desired`` annotation, skipping a Pod that
  already carries the very document, and returns the names it could not write.

Failures: a worker Pod that is not running, is being deleted, carries no report yet, or a report that is
malformed or names another worker is *left out* of the observation with the reason in
:attr:`KubeCluster.excluded` (logged once per reason, never raised): to the scheduler it is gone, so its
load is planned elsewhere. When a cache is not known to be current (the API server unreachable or
refusing), or no gateway is ready, or one ready
gateway cannot be read, ``observe`` raises :class:`UnavailableError` and the scheduler skips the tick
rather than plan from a partial view. A Pod that cannot be patched (deleted, a conflict, a timeout, a
refusal) is returned by ``apply``, and the loop writes it again at the next tick.

Use as ``async with``: the caches follow the Pods inside the block.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
import kubernetes.client

from warmserve.operator.planning.snapshot import Demand
from warmserve.operator.ports import Observation
from warmserve.protocol.demand_report import ModelDemand, parse_demand
from warmserve.protocol.errors import InvalidFieldError, UnavailableError
from warmserve.protocol.kube_api import KUBE_ERRORS, brief, pod_lister
from warmserve.protocol.list_watch import ListWatch
from warmserve.protocol.pods import (
    GATEWAY_DEFAULT_PORT,
    GATEWAY_PORT_NAME,
    GATEWAY_SELECTOR,
    Pod,
    pod_url,
    worker_selector,
)
from warmserve.protocol.state import DESIRED_ANNOTATION, OBSERVED_ANNOTATION, DesiredState, ObservedState

log = logging.getLogger(__name__)

#: Seconds one API request or one gateway may take before it counts as unreachable this tick.
REQUEST_TIMEOUT_S = 5.0


class NotReporting(UnavailableError):
    """A worker Pod that has nothing to report now (not running, being deleted, no annotation yet)."""


def worker_report(pod: Pod) -> ObservedState:
    """The observed state a worker Pod carries.

    Raises :class:`NotReporting` for a Pod that is not running, is being deleted or carries no
    ``warmserve.io/observed`` annotation yet, and :class:`InvalidFieldError` naming the field for a
    malformed report or one that names another worker (the worker's name is its Pod's).
    """
    metadata = pod["metadata"]
    if metadata.get("deletionTimestamp") is not None:
        raise NotReporting("being deleted")
    phase = pod.get("status", {}).get("phase")
    if phase != "Running":
        raise NotReporting(f"phase {phase or 'unknown'}, not Running")
    text = (metadata.get("annotations") or {}).get(OBSERVED_ANNOTATION)
    if text is None:
        raise NotReporting(f"no {OBSERVED_ANNOTATION} annotation yet")
    report = ObservedState.from_json(text)
    if report.worker != metadata["name"]:
        raise InvalidFieldError("worker", f"the Pod's name {metadata['name']!r}", report.worker)
    return report


def demand_url(pod: Pod) -> str | None:
    """Where a gateway Pod serves ``/demand``, or ``None`` when it is not ready (the rule of
    :func:`~warmserve.protocol.pods.pod_url`; the port named :data:`GATEWAY_PORT_NAME`, else
    :data:`GATEWAY_DEFAULT_PORT`)."""
    base = pod_url(pod, GATEWAY_PORT_NAME, GATEWAY_DEFAULT_PORT)
    return None if base is None else f"{base}/demand"


def total_demand(reports: Iterable[Mapping[str, ModelDemand]]) -> dict[str, Demand]:
    """The gateways' reports added up per model."""
    inflight: dict[str, float] = {}
    queued: dict[str, int] = {}
    for report in reports:
        for model, d in report.items():
            inflight[model] = inflight.get(model, 0.0) + d.inflight
            queued[model] = queued.get(model, 0) + d.queued
    return {m: Demand(inflight=inflight[m], queued=queued[m]) for m in sorted(inflight)}


@dataclass(frozen=True, slots=True)
class _Listed:
    """One observation's worker Pods and the annotation text each carries (for ``apply``'s skip)."""

    reports: dict[str, ObservedState]
    excluded: dict[str, str]
    desired_text: dict[str, str]


class KubeCluster:
    """Worker Pods in ``namespace`` (of ``pool``, or of every pool) and the gateway Pods beside them.

    ``api`` is a client from :func:`~warmserve.protocol.kube_api.kube_api_client`; ``session`` is used for
    the gateways' ``/demand``. The synchronous ``kubernetes`` client runs in worker threads."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        session: aiohttp.ClientSession,
        namespace: str,
        *,
        pool: str | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.session = session
        self.namespace = namespace
        self.timeout_s = timeout_s
        pods = pod_lister(api)
        self._workers = ListWatch(pods, namespace, worker_selector(pool), request_timeout_s=timeout_s)
        self._gateways = ListWatch(pods, namespace, GATEWAY_SELECTOR, request_timeout_s=timeout_s)
        self.excluded: dict[str, str] = {}  # worker Pod → why the last observation left it out
        self._desired_text: dict[str, str] = {}  # worker Pod → its desired annotation when last seen

    async def __aenter__(self) -> Self:
        """Start following the Pods; return once the first lists have been tried (at most ``timeout_s``)."""
        caches = (self._workers, self._gateways)
        for cache in caches:
            cache.start()
        for cache in caches:
            await asyncio.to_thread(cache.tried.wait, self.timeout_s)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for cache in (self._workers, self._gateways):
            await asyncio.to_thread(cache.stop)

    def now(self) -> float:
        """Epoch seconds, the clock of the ``since`` every worker reports (the :class:`Cluster` port's)."""
        return time.time()

    async def observe(self) -> Observation:
        """Every reporting worker Pod's state and the ready gateways' demand (see the module docstring)."""
        now = self.now()
        listed = self._read_workers(self._workers.items())
        demand = await self._demand(self._gateways.items())
        self._tell_exclusions(listed.excluded)
        self.excluded = listed.excluded
        self._desired_text = listed.desired_text
        return Observation(now=now, workers=listed.reports, demand=demand)

    async def apply(self, desired: Mapping[str, DesiredState]) -> set[str]:
        """Merge-patch each worker Pod's desired annotation; the names of the Pods not written."""
        names = sorted(desired)
        written = await asyncio.gather(*(self._patch(n, desired[n].to_json()) for n in names))
        return {name for name, ok in zip(names, written, strict=True) if not ok}

    def _read_workers(self, pods: Iterable[Pod]) -> _Listed:
        listed = _Listed(reports={}, excluded={}, desired_text={})
        for pod in pods:
            name: str = pod["metadata"]["name"]
            text = (pod["metadata"].get("annotations") or {}).get(DESIRED_ANNOTATION)
            if text is not None:
                listed.desired_text[name] = text
            try:
                listed.reports[name] = worker_report(pod)
            except (NotReporting, InvalidFieldError) as exc:
                listed.excluded[name] = str(exc)
        return listed

    def _tell_exclusions(self, excluded: Mapping[str, str]) -> None:
        """Log each Pod left out once per reason: the same reason tick after tick is said only once."""
        for name, reason in sorted(excluded.items()):
            if self.excluded.get(name) != reason:
                log.warning("worker Pod %s/%s left out: %s", self.namespace, name, reason)
        for name in sorted(self.excluded.keys() - excluded.keys()):
            log.info("worker Pod %s/%s no longer left out", self.namespace, name)

    async def _demand(self, gateways: Iterable[Pod]) -> dict[str, Demand]:
        urls = sorted(url for pod in gateways if (url := demand_url(pod)) is not None)
        if not urls:
            raise UnavailableError(
                f"no ready gateway Pod ({GATEWAY_SELECTOR}) in namespace {self.namespace}: demand unknown"
            )
        return total_demand(await asyncio.gather(*(self._gateway_demand(url) for url in urls)))

    async def _gateway_demand(self, url: str) -> dict[str, ModelDemand]:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with self.session.get(url, timeout=timeout) as response:
                response.raise_for_status()
                body: Any = await response.json()
                return parse_demand(body)
        except (aiohttp.ClientError, TimeoutError, InvalidFieldError, ValueError) as exc:
            raise UnavailableError(f"gateway demand unreadable at {url}: {exc}") from exc

    async def _patch(self, name: str, text: str) -> bool:
        """Write ``text`` to the Pod's desired annotation unless it carries it already; False if not
        written."""
        if self._desired_text.get(name) == text:
            return True
        body = {"metadata": {"annotations": {DESIRED_ANNOTATION: text}}}
        try:
            await asyncio.to_thread(
                self.core.patch_namespaced_pod,
                name,
                self.namespace,
                body,
                _content_type="application/merge-patch+json",
                _request_timeout=self.timeout_s,
            )
        except KUBE_ERRORS as exc:
            log.warning(
                "cannot write the desired state of worker Pod %s/%s: %s", self.namespace, name, brief(exc)
            )
            return False
        self._desired_text[name] = text
        return True
