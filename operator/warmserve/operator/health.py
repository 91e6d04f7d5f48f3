"""When ``warmserve operator`` is alive and when it is ready: the rules behind ``/healthz`` and ``/readyz``
(docs/operator.md, "Probes").

- **Alive** unless something that a restart cures is stuck: the lease elector has not finished a round,
  or (leading) the scheduler loop has not ticked, for :data:`STALE_PERIODS` of its periods and
  at least :data:`MIN_STALL_S` (an API server that is slow or away makes rounds and ticks slow, never
  stops them; restarting would not bring it back). That the endpoint answers at all shows the event loop
  is responsive.
- **Ready** when the operator does its part: it reached the Lease within one lease duration (so as a
  standby it would take over) and, when it leads, the handlers and the scheduler have started (the
  resources listed, the Pod caches synced, kopf running). A healthy standby is ready too: a Deployment of
  two replicas reports 2/2, and ``helm install --wait`` and ``kubectl rollout status`` finish.

Pure: the times are the caller's monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Periods (lease rounds, scheduler ticks) without progress after which the operator counts as stuck...
STALE_PERIODS = 5
#: ...but never fewer seconds than this: a round or a tick may wait out request timeouts.
MIN_STALL_S = 30.0


@dataclass(slots=True)
class Pulse:
    """What the probes judge by, written as the operator goes (monotonic seconds; ``None``: not yet).

    ``started``: when the process started; ``retry_s``, ``duration_s``: the lease's pace
    (:class:`~warmserve.operator.leadership.Timing`); ``tick_s``: the scheduler's tick. ``leading``: this
    process holds the lease; ``serving``: as leader, its handlers and scheduler started; ``lease_round``:
    when the elector last finished a round (whatever its outcome); ``lease_contact``: when it last read or
    wrote the Lease; ``lease_error``: why the last round failed (empty when it did not); ``last_tick``:
    when the scheduler last ticked (or started: its first tick is due then)."""

    started: float
    retry_s: float
    duration_s: float
    tick_s: float
    leading: bool = False
    serving: bool = False
    lease_round: float | None = None
    lease_contact: float | None = None
    lease_error: str = ""
    last_tick: float | None = None


def stuck(pulse: Pulse, now: float) -> str | None:
    """Why the operator is stuck (``/healthz`` fails, and the kubelet restarts it), or ``None``."""
    round_age = now - (pulse.lease_round if pulse.lease_round is not None else pulse.started)
    if round_age > _stall_s(pulse.retry_s):
        return f"the lease elector has not finished a round for {round_age:.0f} s"
    if pulse.leading and pulse.last_tick is not None:
        tick_age = now - pulse.last_tick
        if tick_age > _stall_s(pulse.tick_s):
            return f"the scheduler loop has not ticked for {tick_age:.0f} s"
    return None


def unready(pulse: Pulse, now: float) -> str | None:
    """Why the operator is not ready (``/readyz`` fails), or ``None``."""
    if pulse.lease_contact is None or now - pulse.lease_contact > pulse.duration_s:
        since = "yet" if pulse.lease_contact is None else f"for {now - pulse.lease_contact:.0f} s"
        return f"the Lease not reached {since}" + (f": {pulse.lease_error}" if pulse.lease_error else "")
    if pulse.leading and not pulse.serving:
        return "leading: starting the handlers and the scheduler"
    return None


def role(pulse: Pulse) -> str:
    """``leader`` or ``standby``: what the probes' answers say this process is."""
    return "leader" if pulse.leading else "standby"


def _stall_s(period_s: float) -> float:
    return max(STALE_PERIODS * period_s, MIN_STALL_S)
