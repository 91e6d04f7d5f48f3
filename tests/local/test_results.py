"""The replay summary: counts add up, percentiles over answered requests, failures miss the SLO."""

from __future__ import annotations

import math

import pytest

from warmserve.local.client import Outcome
from warmserve.local.results import format_table, summarize


def ok(ttft: float) -> Outcome:
    return Outcome("m", 0.0, ttft, ttft + 0.1, 200)


def test_counts_percentiles_and_attainment() -> None:
    outcomes = [ok(t / 100) for t in range(1, 101)] + [Outcome("m", 0.0, None, 1.0, 503, "HTTP 503: full")]
    s = summarize("warmserve", outcomes, slo_s=0.5, cold_starts=2, promotions=3)
    assert (s.requests, s.completed, s.errors) == (101, 100, 1)
    assert s.ttft_p50 == pytest.approx(0.505)
    assert s.ttft_p99 == pytest.approx(0.9901)
    assert s.slo_attainment == pytest.approx(50 / 101)  # the failed request is a miss
    table = format_table([s])
    assert "warmserve" in table and "505" in table and "49.5%" in table


def test_a_stream_cut_after_its_first_token_is_an_error_not_a_ttft() -> None:
    cut = Outcome("m", 0.0, 0.01, 0.5, 200, "stream ended without [DONE]")
    s = summarize("p", [cut, ok(0.2)], slo_s=1.0, cold_starts=0, promotions=0)
    assert (s.completed, s.errors) == (1, 1)
    assert s.ttft_p50 == pytest.approx(0.2)
    assert s.slo_attainment == pytest.approx(0.5)


def test_nothing_answered_prints_dashes() -> None:
    s = summarize("p", [Outcome("m", 0.0, None, 1.0, 0, "ClientConnectorError")], 1.0, 0, 0)
    assert math.isnan(s.ttft_p99) and s.slo_attainment == 0.0
    assert " - " in format_table([s])
