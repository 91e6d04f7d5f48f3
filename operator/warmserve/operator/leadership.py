"""Who runs the operator: the election rule over one ``coordination.k8s.io/v1`` Lease (docs/operator.md).

Several ``warmserve operator`` processes may run for one namespace; exactly one of them, the holder of the
namespace's Lease, runs the handlers and the scheduler. The rule is Kubernetes' own (client-go's
``leaderelection``): a candidate takes a Lease that does not exist, that nobody holds (released), or whose
holder has not renewed it for ``leaseDurationSeconds``; its holder renews it; anyone else waits. Expiry is
judged by the candidate's *own* clock, counting from when it last saw the record change, never by the
``renewTime`` another machine wrote, so clocks that disagree cannot make two holders. Who wins when two
candidates claim at once is the API server's: each write carries the ``resourceVersion`` it read, and the
second is refused (the Kubernetes adapter, ``warmserve.operator.kube.lease``, makes the calls).

Pure: plain data in, the record to write (or ``None``) out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A Lease's ``spec``: its holder (``""`` when released), how long a renewal holds it, when the holder
    acquired and last renewed it, and how many times it changed hands."""

    holder: str
    duration_s: int
    acquired: datetime | None
    renewed: datetime | None
    transitions: int


@dataclass(frozen=True, slots=True)
class Timing:
    """How a candidate paces itself for a lease of ``duration_s`` seconds: it tries every ``retry_s``, and
    as holder gives up once ``renew_deadline_s`` passed without a renewal — before anyone else may take
    the lease, so two never act at once — and gives each request half of that (a round is a read and a
    write). client-go's defaults are in about the same proportions (15 s, 10 s, 2 s)."""

    duration_s: int

    @property
    def retry_s(self) -> float:
        return self.duration_s / 5

    @property
    def renew_deadline_s(self) -> float:
        return self.duration_s * 2 / 3

    @property
    def request_timeout_s(self) -> float:
        return self.renew_deadline_s / 2


def claim(
    current: LeaseRecord | None, unchanged_s: float, now: datetime, me: str, duration_s: int
) -> LeaseRecord | None:
    """The record ``me`` writes to hold the lease, or ``None`` while another holds it.

    ``current`` is the Lease read (``None``: there is none yet), ``unchanged_s`` how long this candidate has
    seen that very record unchanged (by its own clock), ``now`` the time written into the record. Our own
    lease is renewed (its acquisition time and transitions kept); a missing, released or expired one is
    taken (one more transition); one held by another and renewed within its duration is left alone.
    """
    if current is None:
        return LeaseRecord(me, duration_s, now, now, 0)
    if current.holder == me:
        return replace(current, duration_s=duration_s, renewed=now)
    if current.holder and unchanged_s < current.duration_s:
        return None
    return LeaseRecord(me, duration_s, now, now, current.transitions + 1)


def released(current: LeaseRecord, now: datetime) -> LeaseRecord:
    """The record a holder leaves when it stops on purpose (client-go's release): no holder, so the next
    candidate takes it at once instead of waiting out the duration."""
    return LeaseRecord("", 1, now, now, current.transitions)
