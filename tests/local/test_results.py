"""The replay summary: counts add up, a request with no first token is an infinite TTFT."""

from __future__ import annotations

import json

import pytest

from warmserve.local.client import Outcome
from warmserve.local.results import format_table, summarize


def ok(ttft: float) -> Outcome:
    return Outcome("m", 0.0, ttft, ttft + 0.1, 200)


def test_counts_percentiles_and_attainment() -> None:
    outcomes = [ok(t / 100) for t in range(1, 101)] + [Outcome("m", 0.0, None, 1.0, 503, "HTTP 503: full")]
    s = summarize("warmserve", outcomes, slo_s=0.5, cold_starts=2, prewarm_hits=3)
    f = s.figures
    assert (f.requests, f.completed, f.dropped) == (101, 100, 1)
    assert f.ttft_p50_s == pytest.approx(0.51)  # a TTFT some request had
    assert f.ttft_p99_s == pytest.approx(1.0)  # 1 failure in 101: the 99th percentile is still answered
    assert f.slo_attainment == pytest.approx(50 / 101)  # the failed request is a miss
    table = format_table([s])
    assert "warmserve" in table and "510" in table and "49.5%" in table


def test_failures_count_as_infinite_in_the_tail() -> None:
    """Two failures in 100 requests: the 99th percentile falls on them, as in the simulator."""
    outcomes = [ok(0.1)] * 98 + [Outcome("m", 0.0, None, 1.0, 503, "HTTP 503: full")] * 2
    s = summarize("p", outcomes, slo_s=1.0, cold_starts=0, prewarm_hits=0)
    assert s.figures.ttft_p50_s == pytest.approx(0.1) and s.figures.ttft_p99_s is None
    assert " inf " in format_table([s])
    assert json.loads(json.dumps(s.as_json()))["ttft_p99_s"] is None  # valid JSON: null, not Infinity


def test_a_stream_cut_after_its_first_token_has_a_ttft_but_did_not_complete() -> None:
    cut = Outcome("m", 0.0, 0.01, 0.5, 200, "stream ended without [DONE]")
    s = summarize("p", [cut, ok(0.2)], slo_s=1.0, cold_starts=0, prewarm_hits=0)
    assert (s.figures.completed, s.figures.dropped) == (1, 1)
    assert s.figures.ttft_mean_s == pytest.approx(0.105)  # its TTFT counts
    assert s.figures.slo_attainment == pytest.approx(1.0)


def test_nothing_answered_is_infinite_and_misses_the_slo() -> None:
    s = summarize("p", [Outcome("m", 0.0, None, 1.0, 0, "ClientConnectorError")], 1.0, 0, 0)
    assert s.figures.ttft_p99_s is None and s.figures.ttft_mean_s is None and s.figures.slo_attainment == 0.0
    assert " inf " in format_table([s])
