"""The figures of one replay and the side-by-side table ``warmserve local`` prints.

TTFT percentiles are over the requests that got a first token; a request that failed before its first
token has no TTFT and counts as an SLO miss (attainment = share of *all* requests with TTFT ≤ the SLO).
With no request answered the percentiles are NaN and print as ``-``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from warmserve.local.client import Outcome


@dataclass(frozen=True, slots=True)
class Summary:
    """One policy's replay in figures (times in seconds)."""

    policy: str
    requests: int
    completed: int
    errors: int
    ttft_p50: float
    ttft_p90: float
    ttft_p99: float
    slo_s: float
    slo_attainment: float
    cold_starts: int
    promotions: int


def summarize(
    policy: str, outcomes: Sequence[Outcome], slo_s: float, cold_starts: int, promotions: int
) -> Summary:
    """Summarise ``outcomes``; ``cold_starts`` / ``promotions`` are the scheduler's counts for the run."""
    ttfts = np.array([o.ttft_s for o in outcomes if o.ok and o.ttft_s is not None], dtype=float)
    p50, p90, p99 = (float(np.percentile(ttfts, q)) if len(ttfts) else math.nan for q in (50, 90, 99))
    met = sum(1 for o in outcomes if o.ok and o.ttft_s is not None and o.ttft_s <= slo_s)
    completed = sum(1 for o in outcomes if o.ok)
    return Summary(
        policy=policy,
        requests=len(outcomes),
        completed=completed,
        errors=len(outcomes) - completed,
        ttft_p50=p50,
        ttft_p90=p90,
        ttft_p99=p99,
        slo_s=slo_s,
        slo_attainment=met / len(outcomes) if outcomes else math.nan,
        cold_starts=cold_starts,
        promotions=promotions,
    )


def format_table(summaries: Sequence[Summary]) -> str:
    """A fixed-width table, one row per policy."""
    header = (
        f"{'policy':<18} {'requests':>8} {'completed':>9} {'errors':>6} {'TTFT p50':>9} {'p90':>8} "
        f"{'p99':>8} {'SLO met':>8} {'cold starts':>11} {'promotions':>10}"
    )
    rows = [header, "-" * len(header)]
    for s in summaries:
        rows.append(
            f"{s.policy:<18} {s.requests:>8} {s.completed:>9} {s.errors:>6} {_ms(s.ttft_p50):>9} "
            f"{_ms(s.ttft_p90):>8} {_ms(s.ttft_p99):>8} {_pct(s.slo_attainment):>8} {s.cold_starts:>11} "
            f"{s.promotions:>10}"
        )
    slo = summaries[0].slo_s if summaries else math.nan
    rows.append(f"TTFT in ms; SLO met = share of all requests with TTFT <= {slo * 1000:.0f} ms")
    return "\n".join(rows)


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f}"


def _pct(share: float) -> str:
    return "-" if math.isnan(share) else f"{share * 100:.1f}%"
