"""The routing decision: least-loaded eligible instance, never one at its cap or excluded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from warmserve.gateway.instances import Instance, pick_instance


def _instance(replica: str, reported: int = 0, worker: str = "http://w1") -> Instance:
    return Instance(worker, replica, "m", f"{worker}", reported)


def test_picks_the_instance_with_fewest_of_our_requests() -> None:
    a, b, c = _instance("a"), _instance("b"), _instance("c")
    inflight = {a.key: 3, b.key: 1, c.key: 2}
    assert pick_instance([a, b, c], inflight, cap=4) == b


def test_skips_instances_at_the_cap_and_answers_none_when_all_are() -> None:
    a, b = _instance("a"), _instance("b")
    assert pick_instance([a, b], {a.key: 2, b.key: 1}, cap=2) == b
    assert pick_instance([a, b], {a.key: 2, b.key: 2}, cap=2) is None
    assert pick_instance([], {}, cap=2) is None


def test_excluded_instances_are_never_picked() -> None:
    a, b = _instance("a"), _instance("b")
    assert pick_instance([a, b], {b.key: 1}, cap=4, exclude={a.incarnation}) == b
    assert pick_instance([a, b], {}, cap=4, exclude={a.incarnation, b.incarnation}) is None


def test_a_replica_promoted_again_is_a_new_instance_for_a_request_it_failed() -> None:
    before = Instance("http://w1", "a", "m", "http://w1", serving_since=10.0)
    again = Instance("http://w1", "a", "m", "http://w1", serving_since=12.5)
    assert pick_instance([before], {}, cap=4, exclude={before.incarnation}) is None
    assert pick_instance([again], {}, cap=4, exclude={before.incarnation}) == again


def test_ties_go_to_the_lower_reported_load_then_the_lower_key() -> None:
    busy, idle = _instance("a", reported=5), _instance("b", reported=0)
    assert pick_instance([busy, idle], {}, cap=4) == idle
    same_a, same_b = _instance("x", worker="http://w2"), _instance("x", worker="http://w1")
    assert pick_instance([same_a, same_b], {}, cap=4) == same_b


_instances = st.lists(
    st.builds(
        _instance,
        replica=st.text("abcdef", min_size=1, max_size=2),
        reported=st.integers(0, 10),
        worker=st.sampled_from(["http://w1", "http://w2"]),
    ),
    max_size=8,
    unique_by=lambda i: i.key,
)


@given(_instances, st.data(), st.integers(1, 5))
def test_choice_is_eligible_and_least_loaded(
    instances: list[Instance], data: st.DataObject, cap: int
) -> None:
    inflight = {i.key: data.draw(st.integers(0, cap + 1)) for i in instances}
    exclude = {i.incarnation for i in instances if data.draw(st.booleans())}
    eligible = [i for i in instances if inflight[i.key] < cap and i.incarnation not in exclude]
    chosen = pick_instance(instances, inflight, cap, exclude)
    if not eligible:
        assert chosen is None
        return
    assert chosen in eligible
    assert inflight[chosen.key] == min(inflight[i.key] for i in eligible)
