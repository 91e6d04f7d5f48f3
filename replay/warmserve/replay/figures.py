"""The figures of a replay, one definition for ``warmserve local`` and ``warmserve simulate``.

Every request counts. A request's TTFT is its first token's time minus its arrival; one that never got a
first token (refused, dropped by the gateway, failed, or unfinished when the run ended) has an infinite
TTFT, so it misses its SLO and weighs on the tail percentiles. Percentiles are the nearest value at or
above the rank (``method="higher"``: always a TTFT some request had); one that falls on an infinite TTFT
is ``None`` (``null`` in JSON, ``inf`` in tables), as is every percentile of no requests. The mean is over
the requests that got a first token. SLO attainment is the share of all requests whose TTFT is at most
its SLO (0 with no requests). ``completed`` requests finished their response; ``dropped`` ones did not.

Two counts of the scheduler's scale-outs complete a replay's figures: ``cold_starts``, replicas loaded to
serve at once (a ``ColdStart``), and ``prewarm_hits``, promotions of a prewarmed replica, whose weights
were already resident (a ``Promote``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class RequestFigures:
    """The request figures of a run (seconds; see the module docstring for each)."""

    ttft_mean_s: float | None
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    ttft_p99_s: float | None
    slo_attainment: float
    requests: int
    completed: int
    dropped: int


def request_figures(arrival: Any, first_token: Any, finish: Any, slo_s: Any) -> RequestFigures:
    """The figures of requests arriving at ``arrival`` whose first token came at ``first_token`` and whose
    response finished at ``finish`` (arrays of seconds, NaN or inf where it never did), each with a TTFT SLO
    ``slo_s`` (an array, or one value for all)."""
    ttft = np.where(np.isfinite(first_token), first_token - arrival, np.inf)
    completed = int(np.isfinite(finish).sum())
    served = ttft[np.isfinite(ttft)]
    return RequestFigures(
        ttft_mean_s=finite(float(np.mean(served))) if served.size else None,
        ttft_p50_s=percentile(ttft, 50),
        ttft_p90_s=percentile(ttft, 90),
        ttft_p99_s=percentile(ttft, 99),
        slo_attainment=float(np.mean(ttft <= slo_s)) if ttft.size else 0.0,
        requests=int(ttft.size),
        completed=completed,
        dropped=int(ttft.size) - completed,
    )


def percentile(values: Any, q: float) -> float | None:
    """The ``q``-th percentile of ``values`` by the rule above; None when it is infinite or there are none."""
    if len(values) == 0:
        return None
    return finite(float(np.percentile(values, q, method="higher")))


def finite(value: float) -> float | None:
    """``value``, or None when it is not finite."""
    return value if math.isfinite(value) else None
