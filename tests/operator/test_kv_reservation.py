"""KV reservation: what a serving replica keeps free, lends, and whom it evicts to take space back."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.operator.planning_builders import GIB, serving
from warmserve.operator.planning.kv_reservation import (
    Borrower,
    KvConfig,
    lend_change,
    lend_target,
    reclaim_victims,
    reserve_bytes,
)
from warmserve.operator.planning.snapshot import SnapshotError

CONFIG = KvConfig()


def test_the_reserve_is_proportional_to_load_with_a_floor() -> None:
    replica = serving("s", "a", [0], 10, inflight=2, kv_used_bytes=2 * GIB)
    assert reserve_bytes(replica, 8, 0.0, CONFIG) == 10 * GIB // 4  # 2 of B = 8 in flight
    assert reserve_bytes(replica, 8, 4.0, CONFIG) == 10 * GIB // 2  # the model's share is larger
    idle = serving("s", "a", [0], 10)
    assert reserve_bytes(idle, 8, 0.0, CONFIG) == GIB  # 10 % floor
    assert reserve_bytes(idle, 8, 0.0, KvConfig(min_reserve_fraction=0)) == 0


def test_the_lend_target_is_the_free_space_beyond_the_reserve_in_whole_chunks() -> None:
    replica = serving("s", "a", [0], 10, inflight=2, kv_used_bytes=2 * GIB)
    assert lend_target(replica, 8, 0.0, CONFIG) == 10 * GIB - 2 * GIB - 10 * GIB // 4
    odd = serving("s", "a", [0], 1, kv_used_bytes=GIB // 3)
    target = lend_target(odd, 8, 0.0, CONFIG)
    assert target % CONFIG.chunk_bytes == 0 and 0 < target <= GIB - GIB // 3 - GIB // 10
    full = serving("s", "a", [0], 10, inflight=8, kv_used_bytes=GIB)
    assert lend_target(full, 8, 0.0, CONFIG) == 0


def test_the_room_for_one_request_of_the_maximum_length_is_never_lent() -> None:
    """The planner lends by the worker's rule (``kept_kv_bytes``): an idle replica with no reserve keeps
    the KV space of one longest request, so what it is asked to lend is what the worker lends."""
    config = KvConfig(min_reserve_fraction=0)
    idle = serving("s", "a", [0], 10)
    assert lend_target(idle, 8, 0.0, config) == 10 * GIB
    assert lend_target(idle, 8, 0.0, config, kept_bytes=GIB) == 9 * GIB
    assert lend_change(idle, 8, 0.0, config, kept_bytes=GIB) == 9 * GIB - 10 * GIB // 8
    busy = serving("s", "a", [0], 10, kv_used_bytes=5 * GIB, kv_lent_bytes=5 * GIB)
    assert lend_target(busy, 8, 0.0, config, kept_bytes=GIB) == 5 * GIB  # what requests use counts in


@given(st.integers(0, 64), st.integers(0, 64), st.floats(0, 40), st.integers(1, 16))
def test_lending_never_touches_used_or_reserved_space(total: int, used: int, share: float, b: int) -> None:
    replica = serving(
        "s", "a", [0], total / 4, kv_used_bytes=min(used, total) * GIB // 4, inflight=int(share)
    )
    lent = lend_target(replica, b, share, CONFIG)
    reserve = reserve_bytes(replica, b, share, CONFIG)
    assert 0 <= lent <= max(replica.kv_total_bytes - replica.kv_used_bytes - reserve, 0)


def test_the_lent_amount_sits_one_slack_under_the_target_and_moves_only_beyond_the_band() -> None:
    config = KvConfig(min_reserve_fraction=0)  # the reserve is exactly in-flight x 1/B of the KV space
    b, slack = 8, 10 * GIB // 8  # one request's share of the 10 GiB KV space
    idle = serving("s", "a", [0], 10)
    assert lend_target(idle, b, 0.0, config) == 10 * GIB
    assert lend_change(idle, b, 0.0, config) == 10 * GIB - slack
    lent = replace(idle, kv_lent_bytes=10 * GIB - slack)
    assert lend_change(lent, b, 0.0, config) is None  # settled
    arrived = replace(lent, inflight=1)  # the target falls by one slack: still within the band
    assert lend_change(arrived, b, 0.0, config) is None
    decoding = replace(arrived, kv_used_bytes=GIB // 2)  # and below the lent amount: reclaim
    assert lend_change(decoding, b, 0.0, config) == 10 * GIB - GIB // 2 - 2 * slack
    reclaimed = replace(decoding, kv_lent_bytes=10 * GIB - GIB // 2 - 2 * slack)
    assert lend_change(replace(reclaimed, kv_used_bytes=GIB), b, 0.0, config) is None  # decode growth
    assert (
        lend_change(replace(reclaimed, kv_used_bytes=2 * GIB), b, 0.0, config)
        == 10 * GIB - 2 * GIB - 2 * slack
    )
    assert lend_change(replace(reclaimed, inflight=0), b, 0.0, config) is None  # up by one slack: kept
    finished = replace(reclaimed, inflight=0, kv_used_bytes=0)  # up by more than two slacks: lend again
    assert lend_change(finished, b, 0.0, config) == 10 * GIB - slack


def test_without_slack_the_lent_amount_follows_the_target() -> None:
    exact = KvConfig(lend_slack_requests=0)
    idle = serving("s", "a", [0], 10)
    target = lend_target(idle, 8, 0.0, exact)
    assert lend_change(idle, 8, 0.0, exact) == target
    busier = replace(idle, kv_lent_bytes=target, inflight=1)
    assert lend_change(busier, 8, 0.0, exact) == lend_target(busier, 8, 0.0, exact) < target
    assert lend_change(replace(idle, kv_lent_bytes=target - exact.chunk_bytes), 8, 0.0, exact) is None
    with pytest.raises(SnapshotError, match=r"kv\.lend_slack_requests"):
        KvConfig(lend_slack_requests=-1)


@given(st.integers(0, 64), st.integers(0, 64), st.floats(0, 40), st.integers(1, 16), st.integers(0, 64))
def test_a_lend_change_never_lends_used_or_reserved_space(
    total: int, used: int, share: float, b: int, lent: int
) -> None:
    replica = serving(
        "s", "a", [0], total / 4, kv_used_bytes=min(used, total) * GIB // 4, inflight=int(share)
    )
    replica = replace(replica, kv_lent_bytes=min(lent, total) * GIB // 4)
    new = lend_change(replica, b, share, CONFIG)
    target = lend_target(replica, b, share, CONFIG)
    if new is None:
        assert replica.kv_lent_bytes <= target  # what it keeps lending is still spare
    else:
        assert 0 <= new <= target and new % CONFIG.chunk_bytes == 0


def test_reclaim_evicts_the_lowest_score_borrowers_on_gpus_over_the_limit() -> None:
    borrowers = [
        Borrower("a", (0,), 3 * GIB, score=1.0),
        Borrower("b", (0,), 3 * GIB, score=2.0),
        Borrower("c", (1,), GIB, score=0.5),  # lowest, but its GPU is within the limit
        Borrower("d", (0, 1), GIB, score=0.1),
    ]
    assert reclaim_victims(borrowers, 4 * GIB) == ("d", "a")
    assert reclaim_victims(borrowers, 8 * GIB) == ()
    assert reclaim_victims(borrowers, 0) == ("d", "c", "a", "b")
