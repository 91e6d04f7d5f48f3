"""KV reservation: what a serving replica keeps free, lends, and whom it evicts to take space back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.operator.planning_builders import GIB, serving
from warmserve.operator.kv_reservation import Borrower, KvConfig, lend_target, reclaim_victims, reserve_bytes

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


@given(st.integers(0, 64), st.integers(0, 64), st.floats(0, 40), st.integers(1, 16))
def test_lending_never_touches_used_or_reserved_space(total: int, used: int, share: float, b: int) -> None:
    replica = serving(
        "s", "a", [0], total / 4, kv_used_bytes=min(used, total) * GIB // 4, inflight=int(share)
    )
    lent = lend_target(replica, b, share, CONFIG)
    reserve = reserve_bytes(replica, b, share, CONFIG)
    assert 0 <= lent <= max(replica.kv_total_bytes - replica.kv_used_bytes - reserve, 0)


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
