"""The /demand document round-trips, and a bad one is rejected naming the field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmserve.protocol.demand_report import ModelDemand, demand_body, parse_demand
from warmserve.protocol.errors import InvalidFieldError

_counts = st.integers(0, 10**9)


@given(st.dictionaries(st.text(min_size=1), st.builds(ModelDemand, _counts, _counts, _counts)))
def test_round_trip(demand: dict[str, ModelDemand]) -> None:
    assert parse_demand(demand_body(demand)) == demand


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "demand"),
        ({"m": 3}, "demand[m]"),
        ({"m": {"inflight": 1, "queued": 0}}, "demand[m].arrivals_total"),
        ({"m": {"inflight": -1, "queued": 0, "arrivals_total": 0}}, "demand[m].inflight"),
        ({"m": {"inflight": 1, "queued": True, "arrivals_total": 0}}, "demand[m].queued"),
    ],
)
def test_bad_documents(doc: object, field: str) -> None:
    with pytest.raises(InvalidFieldError) as info:
        parse_demand(doc)
    assert info.value.field == field
