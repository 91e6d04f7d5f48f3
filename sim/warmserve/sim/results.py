"""The figures of a run, under the stable JSON keys documented in docs/simulator.md.

Every request counts: one that never got a first token (dropped by the gateway, refused, or unfinished
when the run ended) has an infinite TTFT, so it misses its SLO and weighs on the tail percentiles (a
percentile that falls on such requests is reported as ``null`` in JSON, ``inf`` in tables). TPOT is over
completed requests with more than one output token. Requests of the warm-up (``RunResult.measured``) are
left out of every figure but the run-wide counters (cold starts, prewarm hits, GPU time).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from warmserve.sim.simulator import RunResult

KEYS: tuple[str, ...] = (
    "ttft_mean_s",
    "ttft_p50_s",
    "ttft_p90_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p99_s",
    "slo_attainment",
    "requests",
    "completed",
    "dropped",
    "cold_starts",
    "prewarm_hits",
    "gpu_busy_s",
)


def summarize(run: RunResult) -> dict[str, float | int | None]:
    """The figures of ``run`` under :data:`KEYS`."""
    keep = run.measured()
    first, finish, output = run.first_token[keep], run.finish[keep], run.output[keep]
    ttft = np.where(np.isfinite(first), first - run.arrival[keep], np.inf)
    completed = np.isfinite(finish)
    multi = completed & (output > 1)
    tpot = (finish[multi] - first[multi]) / (output[multi] - 1)
    served = ttft[np.isfinite(ttft)]
    return {
        "ttft_mean_s": _finite(float(np.mean(served))) if served.size else None,
        "ttft_p50_s": _pct(ttft, 50),
        "ttft_p90_s": _pct(ttft, 90),
        "ttft_p99_s": _pct(ttft, 99),
        "tpot_p50_s": _pct(tpot, 50),
        "tpot_p99_s": _pct(tpot, 99),
        "slo_attainment": float(np.mean(ttft <= run.slo[keep])) if ttft.size else 0.0,
        "requests": int(ttft.size),
        "completed": int(completed.sum()),
        "dropped": int(ttft.size - completed.sum()),
        "cold_starts": run.cold_starts,
        "prewarm_hits": run.prewarm_hits,
        "gpu_busy_s": round(run.gpu_busy_s, 3),
        "scheduler_held_ticks": run.held_ticks,
        "scheduler_excluded_ticks": run.excluded_ticks,
    }


def _pct(values: Any, q: float) -> float | None:
    if len(values) == 0:
        return None
    return _finite(float(np.percentile(values, q, method="higher")))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def table(figures: dict[str, dict[str, Any]]) -> str:
    """A plain-text table, one row per policy."""
    heads = (
        "policy",
        "TTFT mean",
        "p50",
        "p90",
        "p99",
        "TPOT p50",
        "p99",
        "SLO",
        "requests",
        "done",
        "dropped",
        "cold",
        "hits",
        "GPU-s busy",
    )
    rows: list[tuple[str, ...]] = [heads]
    for name, f in figures.items():
        rows.append(
            (
                name,
                *(_fmt(f[k]) for k in KEYS[:6]),
                f"{f['slo_attainment']:.2%}",
                *(str(f[k]) for k in KEYS[7:12]),
                f"{f['gpu_busy_s']:.0f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _fmt(value: float | None) -> str:
    return "inf" if value is None else f"{value:.3f}"
