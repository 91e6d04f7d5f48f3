"""The election rule over the namespace's Lease (``warmserve.operator.leadership``) and the probes' rules
(``warmserve.operator.health``), without a server: a missing, released or expired lease is taken, a live
one left alone whatever its ``renewTime`` says, our own renewed; two candidates seeing the same expired
lease both claim it (the API server's resourceVersion check picks one: tests/operator/kube/test_lease.py);
liveness and readiness of a standby and a leader."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from warmserve.operator.health import MIN_STALL_S, Pulse, role, stuck, unready
from warmserve.operator.leadership import LeaseRecord, Timing, claim, released

NOW = datetime(2026, 12, 4, 9, 0, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=5)


def held_by(holder: str, duration_s: int = 15, transitions: int = 2) -> LeaseRecord:
    return LeaseRecord(holder, duration_s, EARLIER, EARLIER, transitions)


def test_no_lease_yet_is_created_as_ours() -> None:
    assert claim(None, 0.0, NOW, "a", 15) == LeaseRecord("a", 15, NOW, NOW, 0)


def test_a_lease_renewed_within_its_duration_is_left_to_its_holder() -> None:
    assert claim(held_by("b"), 14.9, NOW, "a", 15) is None


def test_expiry_is_judged_by_our_clock_not_by_the_renew_time_written() -> None:
    # renewTime is minutes old (another machine's clock), but we saw the record change 1 s ago.
    assert claim(held_by("b"), 1.0, NOW, "a", 15) is None


def test_an_expired_lease_is_taken_with_one_more_transition() -> None:
    assert claim(held_by("b", duration_s=15), 15.0, NOW, "a", 10) == LeaseRecord("a", 10, NOW, NOW, 3)


def test_the_holders_duration_counts_not_ours() -> None:
    assert claim(held_by("b", duration_s=30), 20.0, NOW, "a", 10) is None


def test_our_own_lease_is_renewed_keeping_its_acquisition_and_transitions() -> None:
    assert claim(held_by("a"), 0.0, NOW, "a", 15) == LeaseRecord("a", 15, EARLIER, NOW, 2)


def test_a_released_lease_is_taken_at_once() -> None:
    free = released(held_by("b"), EARLIER)
    assert free == LeaseRecord("", 1, EARLIER, EARLIER, 2)
    assert claim(free, 0.0, NOW, "a", 15) == LeaseRecord("a", 15, NOW, NOW, 3)


def test_two_candidates_seeing_the_same_expired_lease_both_claim_it() -> None:
    # Both write; the API server accepts the first write of the version read and refuses the second.
    mine, theirs = (claim(held_by("c"), 20.0, NOW, me, 15) for me in ("a", "b"))
    assert mine is not None and theirs is not None and mine.holder != theirs.holder


def test_the_holder_gives_up_before_the_others_may_take_over() -> None:
    timing = Timing(15)
    assert timing.retry_s < timing.renew_deadline_s < timing.duration_s
    assert 2 * timing.request_timeout_s <= timing.renew_deadline_s


def pulse(**fields: Any) -> Pulse:
    return Pulse(0.0, 3.0, 15.0, 1.0, **fields)


def test_a_standby_is_ready_while_it_reaches_the_lease() -> None:
    assert unready(pulse(), 1.0) == "the Lease not reached yet"
    standby = pulse(lease_round=10.0, lease_contact=10.0)
    assert unready(standby, 12.0) is None and role(standby) == "standby"
    away = pulse(lease_round=40.0, lease_contact=10.0, lease_error="HTTP 403 Forbidden")
    assert unready(away, 40.0) == "the Lease not reached for 30 s: HTTP 403 Forbidden"
    assert stuck(away, 40.0) is None  # a restart would not bring the API server back


def test_a_leader_is_ready_once_it_serves() -> None:
    starting = pulse(leading=True, lease_round=10.0, lease_contact=10.0)
    assert unready(starting, 11.0) == "leading: starting the handlers and the scheduler"
    assert role(starting) == "leader"
    assert unready(pulse(leading=True, serving=True, lease_round=10.0, lease_contact=10.0), 11.0) is None


def test_a_stuck_elector_or_scheduler_loop_fails_liveness() -> None:
    assert stuck(pulse(), MIN_STALL_S) is None
    assert stuck(pulse(), MIN_STALL_S + 1) == "the lease elector has not finished a round for 31 s"
    leader = pulse(leading=True, serving=True, lease_round=100.0, last_tick=70.0)
    assert stuck(leader, 100.0) is None
    assert stuck(leader, 101.0) == "the scheduler loop has not ticked for 31 s"
    assert stuck(pulse(lease_round=100.0, last_tick=0.0), 101.0) is None  # a standby does not tick
