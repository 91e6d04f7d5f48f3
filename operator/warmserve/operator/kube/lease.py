"""One active operator per namespace: a ``coordination.k8s.io/v1`` Lease held by the process that runs the
handlers and the scheduler (docs/operator.md, "One active operator").

The rule of who may hold it is :func:`warmserve.operator.leadership.claim`; this module makes the calls.
Each round reads the Lease and writes the record the rule asks for, the write carrying the
``resourceVersion`` read, so of two candidates claiming at once the API server refuses the second (409)
and it stays a standby. The Kubernetes client's own ``kubernetes.leaderelection`` runs on threads with
callbacks and blocking sleeps; this is the same protocol on the operator's event loop, its requests on a
thread of its own so that renewals never queue behind the rest of the operator's API calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar, cast

import kubernetes.client

from warmserve.operator.health import Pulse
from warmserve.operator.leadership import LeaseRecord, Timing, claim, released
from warmserve.protocol.errors import UnavailableError
from warmserve.protocol.kube_api import KUBE_ERRORS, brief

log = logging.getLogger(__name__)
GROUP, VERSION, PLURAL = "coordination.k8s.io", "v1", "leases"

T = TypeVar("T")


class Outcome(Enum):
    """How one round ended: this process holds the lease, another does, or the round failed (the API
    server away or refusing, or another candidate's write came first)."""

    HELD = "held"
    OTHER = "other"
    FAILED = "failed"


def identity() -> str:
    """This process's name in ``holderIdentity``: the host name (a Pod's name, in a Pod: ``HOSTNAME`` as
    container runtimes set it, else the system's) and the process id, so that two processes on one machine
    are two candidates."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{os.getpid()}"


def micro_time(moment: datetime | None) -> str | None:
    """A Lease's ``MicroTime`` on the wire: UTC with always six fractional digits (the API server refuses
    one without them)."""
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_record(lease: Mapping[str, Any]) -> LeaseRecord:
    """The record a Lease document read from the API server carries (missing fields: empty)."""
    spec = lease.get("spec") or {}
    acquired, renewed = (spec.get(key) for key in ("acquireTime", "renewTime"))
    return LeaseRecord(
        holder=spec.get("holderIdentity") or "",
        duration_s=spec.get("leaseDurationSeconds") or 0,
        acquired=datetime.fromisoformat(acquired) if acquired else None,
        renewed=datetime.fromisoformat(renewed) if renewed else None,
        transitions=spec.get("leaseTransitions") or 0,
    )


def version(lease: Mapping[str, Any]) -> str:
    """A Lease document's ``resourceVersion``."""
    return str(lease["metadata"]["resourceVersion"])


class LeaseElector:
    """Candidate ``me`` for the Lease ``name`` in ``namespace``; its progress goes into ``pulse`` (for the
    probes and the leader gauge).

    :meth:`lead` waits until this process holds the lease, then runs the work given while renewing it, and
    stops that work at once when the lease is lost.
    """

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        namespace: str,
        name: str,
        timing: Timing,
        pulse: Pulse,
        me: str | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.timing = timing
        self.me = me or identity()
        self._leases = kubernetes.client.CustomObjectsApi(api)
        self._pulse = pulse
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")
        self._seen: tuple[str | None, float] = (None, 0.0)  # the resourceVersion seen, and since when
        self._holder = ""  # the holder the last round saw (logged when it changes)

    async def lead(self, work: Callable[[], Coroutine[Any, Any, None]], stop: asyncio.Event) -> None:
        """Wait until this process holds the lease (or ``stop`` is set: return at once), then run ``work()``
        while renewing it. When the work ends (or raises), the lease is released, so that a standby takes
        over without waiting out the duration. When the lease is lost (another holds it, or it could not
        be renewed within the renew deadline) the work is cancelled at once and
        :class:`UnavailableError` is raised: the process exits 75 and its Deployment starts it again, as a
        standby with a fresh view."""
        try:
            if not await self._acquire(stop):
                return
            running = asyncio.create_task(work(), name="leading")
            keeper = asyncio.create_task(self._keep(), name="lease renewal")
            try:
                await asyncio.wait({running, keeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (running, keeper):
                    task.cancel()
                await asyncio.gather(running, keeper, return_exceptions=True)
            if keeper.done() and not keeper.cancelled():
                self._pulse.leading = False
                raise UnavailableError(f"lost the Lease {self.namespace}/{self.name}: {keeper.result()}")
            await self._release()
            running.result()
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _acquire(self, stop: asyncio.Event) -> bool:
        """Try every ``retry_s`` until this process holds the lease (``True``) or ``stop`` is set."""
        while await self._round() is not Outcome.HELD:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.timing.retry_s)
            if stop.is_set():
                return False
        log.info("leading: holding the Lease %s/%s as %s", self.namespace, self.name, self.me)
        return True

    async def _keep(self) -> str:
        """Renew every ``retry_s``; return why the lease is lost: another holder took it, or no renewal
        succeeded within the renew deadline. A round is cut short at the deadline too (a request may hang
        past its timeout), so the holder always stops before the lease expires for the others."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.timing.retry_s)
            left = renewed + self.timing.renew_deadline_s - time.monotonic()
            try:
                outcome = await asyncio.wait_for(self._round(), max(left, 0.0))
            except TimeoutError:
                outcome = Outcome.FAILED
            if outcome is Outcome.HELD:
                renewed = time.monotonic()
            elif outcome is Outcome.OTHER:
                return f"{self._holder!r} holds it"
            elif time.monotonic() - renewed >= self.timing.renew_deadline_s:
                why = self._pulse.lease_error or "no answer"
                return f"not renewed for {self.timing.renew_deadline_s:g} s ({why})"

    async def _round(self) -> Outcome:
        """Read the Lease and write what :func:`claim` asks for. API errors and a write that lost the race
        (409) end the round as ``FAILED`` (in ``pulse.lease_error``; logged when it changes), never
        raised."""
        pulse = self._pulse
        try:
            lease = await self._call(self._read)
            read = None if lease is None else version(lease)
            now = time.monotonic()
            pulse.lease_contact = now
            if read != self._seen[0]:
                self._seen = (read, now)
            current = None if lease is None else lease_record(lease)
            self._note_holder(current.holder if current is not None else "")
            wanted = claim(current, now - self._seen[1], datetime.now(UTC), self.me, self.timing.duration_s)
            if wanted is None:
                pulse.leading, pulse.lease_error = False, ""
                return Outcome.OTHER
            written = await self._call(self._write, wanted, read)
        except KUBE_ERRORS as exc:
            if brief(exc) != pulse.lease_error:  # once per error, not every round
                log.warning("Lease %s/%s: %s", self.namespace, self.name, brief(exc))
            pulse.lease_error = brief(exc)
            return Outcome.FAILED
        finally:
            pulse.lease_round = time.monotonic()
        self._seen = (version(written), time.monotonic())
        self._note_holder(self.me)
        pulse.leading, pulse.lease_error = True, ""
        return Outcome.HELD

    async def _release(self) -> None:
        """Leave the lease with no holder, if this process still holds it (best effort: a failure only
        means the next candidate waits out the duration)."""
        try:
            lease = await self._call(self._read)
            if lease is not None and lease_record(lease).holder == self.me:
                record = released(lease_record(lease), datetime.now(UTC))
                await self._call(self._write, record, version(lease))
                log.info("released the Lease %s/%s", self.namespace, self.name)
        except KUBE_ERRORS as exc:
            log.warning("could not release the Lease %s/%s: %s", self.namespace, self.name, brief(exc))
        self._pulse.leading = False

    def _note_holder(self, holder: str) -> None:
        if holder not in (self._holder, self.me, ""):
            log.info("standby: the Lease %s/%s is held by %r", self.namespace, self.name, holder)
        self._holder = holder

    async def _call(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)

    def _read(self) -> dict[str, Any] | None:
        return read_lease(self._leases, self.namespace, self.name, self.timing.request_timeout_s)

    def _write(self, record: LeaseRecord, read: str | None) -> dict[str, Any]:
        return write_lease(
            self._leases, self.namespace, self.name, record, read, self.timing.request_timeout_s
        )


def read_lease(
    leases: kubernetes.client.CustomObjectsApi, namespace: str, name: str, timeout_s: float
) -> dict[str, Any] | None:
    """The Lease ``name`` as a document, or ``None`` when there is none.

    Plain documents through ``CustomObjectsApi`` (the same URLs), not ``CoordinationV1Api``: its model
    classes write a ``MicroTime`` whose microseconds are zero without its fraction, which the API server
    refuses."""
    try:
        lease = leases.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=timeout_s
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return cast(dict[str, Any], lease)  # the client types every custom object as ``object``


def write_lease(
    leases: kubernetes.client.CustomObjectsApi,
    namespace: str,
    name: str,
    record: LeaseRecord,
    read: str | None,
    timeout_s: float,
) -> dict[str, Any]:
    """Create the Lease holding ``record`` (``read`` ``None``) or replace the version ``read``: a Lease
    changed since is refused with 409 (``ApiException``), and so is a second create."""
    metadata = {"name": name} | ({"resourceVersion": read} if read is not None else {})
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": record.holder or None,
            "leaseDurationSeconds": record.duration_s,
            "acquireTime": micro_time(record.acquired),
            "renewTime": micro_time(record.renewed),
            "leaseTransitions": record.transitions,
        },
    }
    if read is None:
        written = leases.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, _request_timeout=timeout_s
        )
    else:
        written = leases.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, body, _request_timeout=timeout_s
        )
    return cast(dict[str, Any], written)
