"""The figures of one replay and the side-by-side table ``warmserve local`` prints.

The figures have the replay library's one definition (:mod:`warmserve.replay.figures`), the simulator's:
every request counts, and one that got no first token (an HTTP error, a connection failure, a timeout)
has an infinite TTFT, so it misses the SLO and weighs on the percentiles; a percentile that falls on one
prints as ``inf``. A request whose stream failed after its first token has that TTFT but did not complete.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from warmserve.local.client import Outcome
from warmserve.replay.figures import RequestFigures, request_figures


@dataclass(frozen=True, slots=True)
class Summary:
    """One policy's replay in figures (times in seconds); ``cold_starts`` and ``prewarm_hits`` are the
    scheduler's ``ColdStart`` and ``Promote`` actions."""

    policy: str
    figures: RequestFigures
    slo_s: float
    cold_starts: int
    prewarm_hits: int

    def as_json(self) -> dict[str, Any]:
        """The summary as one flat JSON object, under the simulator's keys for the same figures."""
        counts = {"cold_starts": self.cold_starts, "prewarm_hits": self.prewarm_hits}
        return {"policy": self.policy, **asdict(self.figures), "slo_s": self.slo_s, **counts}


def summarize(
    policy: str, outcomes: Sequence[Outcome], slo_s: float, cold_starts: int, prewarm_hits: int
) -> Summary:
    """Summarise ``outcomes`` (times from each request's scheduled arrival, so arrivals are 0)."""
    first = np.array([math.inf if o.ttft_s is None else o.ttft_s for o in outcomes], dtype=float)
    finish = np.array([o.latency_s if o.ok else math.inf for o in outcomes], dtype=float)
    figures = request_figures(np.zeros(len(outcomes)), first, finish, slo_s)
    return Summary(policy, figures, slo_s, cold_starts, prewarm_hits)


def format_table(summaries: Sequence[Summary]) -> str:
    """A fixed-width table, one row per policy."""
    header = (
        f"{'policy':<18} {'requests':>8} {'completed':>9} {'dropped':>7} {'TTFT p50 (ms)':>13} {'p90':>8} "
        f"{'p99':>8} {'SLO met':>8} {'cold starts':>11} {'prewarm hits':>12}"
    )
    rows = [header, "-" * len(header)]
    for s in summaries:
        f = s.figures
        rows.append(
            f"{s.policy:<18} {f.requests:>8} {f.completed:>9} {f.dropped:>7} {_ms(f.ttft_p50_s):>13} "
            f"{_ms(f.ttft_p90_s):>8} {_ms(f.ttft_p99_s):>8} {f.slo_attainment:>8.1%} {s.cold_starts:>11} "
            f"{s.prewarm_hits:>12}"
        )
    slo = summaries[0].slo_s if summaries else math.nan
    rows.append(
        f"TTFT in ms over all requests (inf: one that got no first token); "
        f"SLO met = share of all requests with TTFT <= {slo * 1000:.0f} ms"
    )
    return "\n".join(rows)


def _ms(seconds: float | None) -> str:
    return "inf" if seconds is None else f"{seconds * 1000:.0f}"
