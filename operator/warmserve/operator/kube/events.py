"""The scheduler's decisions as Kubernetes Events (``events.k8s.io/v1``), written off the tick path
(docs/operator.md, "Events").

Each :class:`~warmserve.operator.decisions.DecisionRecord` becomes an Event of type ``Normal`` with the
record's reason (``Prewarm``, ``ColdStart``, ``Promote``, ``Demote``, ``Evict``) and message, *regarding*
the ModelDeployment that serves the model (so ``kubectl describe modeldeployment`` lists them) and
*related* to the worker Pod the replica is on. A model no ModelDeployment serves any more has its Events
regarding the worker Pod.

Never in the tick's way: :meth:`EventWriter.submit` only puts records on a bounded queue (a full queue
drops them, counted in ``warmserve_operator_events_dropped_total`` and logged); :meth:`EventWriter.run`, a
task of its own, writes them. A write that fails is logged and counted as an error of kind ``Event``,
never raised. Repeats aggregate: a record with the same regarding object, Pod, reason and model as one
written less than ``window_s`` ago raises that Event's ``series.count`` instead of creating another, and
the count is written at most once per ``flush_s`` per Event (so a decision taken every tick costs the API
server one patch per ``flush_s``, not one write per tick).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kubernetes.client

from warmserve.operator.decisions import DecisionRecord
from warmserve.operator.kube.metrics import OperatorMetrics
from warmserve.protocol.kube_api import KUBE_ERRORS, brief

log = logging.getLogger(__name__)

#: The Events' ``reportingController``.
CONTROLLER = "warmserve.io/operator"
#: Records waiting to be written at most; more are dropped.
QUEUE_SIZE = 256
#: Seconds within which a repeat joins the series of the first Event rather than start a new one.
WINDOW_S = 600.0
#: Seconds between two writes of one Event's series count.
FLUSH_S = 30.0
#: Seconds one write may take.
WRITE_TIMEOUT_S = 5.0
#: The longest note the API server takes (bytes; the message is cut to it).
NOTE_MAX = 1024

#: An object reference, as an Event's ``regarding`` or ``related``.
Reference = dict[str, str]
#: What aggregates: regarding (kind, name), related Pod, reason, model.
Key = tuple[str, str, str, str, str]


@dataclass(slots=True)
class _Series:
    """One written Event and the repeats it stands for: ``count`` seen, ``written`` of them in the API."""

    name: str
    first: float
    count: int
    written: int
    last_write: float
    last_seen: float


class EventWriter:
    """Writes decision records of one namespace as Events, from its own task (:meth:`run`)."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        namespace: str,
        references: Callable[[str], Reference | None],
        metrics: OperatorMetrics,
        *,
        queue_size: int = QUEUE_SIZE,
        window_s: float = WINDOW_S,
        flush_s: float = FLUSH_S,
    ) -> None:
        """``references``: the ModelDeployment serving a model, by served name (``Registry.reference``)."""
        self.events = kubernetes.client.EventsV1Api(api)
        self.namespace = namespace
        self.references = references
        self.metrics = metrics
        self.window_s = window_s
        self.flush_s = flush_s
        self.instance = socket.gethostname()
        self.queue: asyncio.Queue[tuple[float, Reference, Reference | None, DecisionRecord]] = asyncio.Queue(
            queue_size
        )
        self.series: dict[Key, _Series] = {}

    def submit(self, records: Iterable[DecisionRecord]) -> None:
        """Queue ``records`` to be written; never blocks, never raises. The regarding object is looked up
        now, while the model's ModelDeployment is known."""
        now = time.time()
        for record in records:
            pod = {"apiVersion": "v1", "kind": "Pod", "name": record.worker, "namespace": self.namespace}
            regarding = self.references(record.model)
            entry = (now, regarding, pod, record) if regarding is not None else (now, pod, None, record)
            try:
                self.queue.put_nowait(entry)
            except asyncio.QueueFull:
                self.metrics.events_dropped.inc()
                log.warning("Event queue full: %s of %s not written", record.reason, record.model)

    async def run(self) -> None:
        """Write queued records until cancelled, and the series counts that are due."""
        while True:
            with contextlib.suppress(TimeoutError):
                when, regarding, related, record = await asyncio.wait_for(self.queue.get(), self._next_due())
                try:
                    await self._write(when, regarding, related, record)
                except Exception:  # a bug here must not stop the Events that follow
                    self.metrics.errors.labels("Event").inc()
                    log.exception("cannot write the %s Event of %s", record.reason, record.model)
            now = time.time()
            for series in list(self.series.values()):
                if series.count > series.written and now - series.last_write >= self.flush_s:
                    await self._flush(series, now)

    def _next_due(self) -> float | None:
        """Seconds until the next series count is due (``None``: none is)."""
        due = [s.last_write + self.flush_s for s in self.series.values() if s.count > s.written]
        return max(min(due) - time.time(), 0.0) if due else None

    async def _write(
        self, when: float, regarding: Reference, related: Reference | None, record: DecisionRecord
    ) -> None:
        key = (
            regarding["kind"],
            regarding["name"],
            related["name"] if related else "",
            record.reason,
            record.model,
        )
        series = self.series.get(key)
        if series is not None and when - series.first < self.window_s:
            series.count += 1
            series.last_seen = when
            return  # its count is written when due
        if series is not None and series.count > series.written:
            await self._flush(series, when)  # the old Event's last repeats, before a new one starts
        self._forget_old(when)
        name = f"{regarding['name']}.{time.time_ns():x}"
        body = _event(name, when, regarding, related, record, self.instance)
        if await self._call(self.events.create_namespaced_event, self.namespace, body):
            self.series[key] = _Series(name, when, 1, 1, when, when)

    async def _flush(self, series: _Series, now: float) -> None:
        """Write one Event's series count; a failed write (logged, counted) is not tried again, the next
        repeat's is."""
        patch = {"series": {"count": series.count, "lastObservedTime": _micro(series.last_seen)}}
        series.last_write, series.written = now, series.count
        await self._call(
            self.events.patch_namespaced_event,
            series.name,
            self.namespace,
            patch,
            _content_type="application/merge-patch+json",
        )

    def _forget_old(self, now: float) -> None:
        """Forget the series past their window whose count is written: memory stays bounded."""
        for key, series in list(self.series.items()):
            if now - series.first >= self.window_s and series.count == series.written:
                del self.series[key]

    async def _call(self, call: Callable[..., Any], *args: Any, **options: Any) -> bool:
        """One write in a worker thread; False (logged, counted) when it fails."""
        try:
            await asyncio.to_thread(call, *args, _request_timeout=WRITE_TIMEOUT_S, **options)
        except KUBE_ERRORS as exc:
            self.metrics.errors.labels("Event").inc()
            log.warning("cannot write an Event in namespace %s: %s", self.namespace, brief(exc))
            return False
        return True


def _event(
    name: str,
    when: float,
    regarding: Reference,
    related: Reference | None,
    record: DecisionRecord,
    instance: str,
) -> dict[str, Any]:
    """The ``events.k8s.io/v1`` Event of one record."""
    body: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": name},
        "eventTime": _micro(when),
        "reportingController": CONTROLLER,
        "reportingInstance": instance[:128],
        "action": record.reason,
        "reason": record.reason,
        "type": "Normal",
        "note": record.message.encode()[:NOTE_MAX].decode(errors="ignore"),
        "regarding": regarding,
    }
    if related is not None:
        body["related"] = related
    return body


def _micro(epoch: float) -> str:
    """A Kubernetes MicroTime."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
