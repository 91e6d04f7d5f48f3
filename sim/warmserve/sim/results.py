"""The figures of a run, under the stable JSON keys documented in docs/simulator.md.

The request figures (TTFT, SLO attainment, completed and dropped requests) have the replay library's one
definition (:mod:`warmserve.replay.figures`), which ``warmserve local`` reports too: every request counts,
one that never got a first token with an infinite TTFT. TPOT is over completed requests with more than one
output token. Requests of the warm-up (``RunResult.measured``) are
left out of every figure but the run-wide counters (cold starts, prewarm hits, GPU time).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from warmserve.replay.figures import percentile, request_figures
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
    """The figures of ``run`` under :data:`KEYS` (the request figures by :func:`request_figures`)."""
    keep = run.measured()
    first, finish, output = run.first_token[keep], run.finish[keep], run.output[keep]
    figures = request_figures(run.arrival[keep], first, finish, run.slo[keep])
    multi = np.isfinite(finish) & (output > 1)
    tpot = (finish[multi] - first[multi]) / (output[multi] - 1)
    return {
        "ttft_mean_s": figures.ttft_mean_s,
        "ttft_p50_s": figures.ttft_p50_s,
        "ttft_p90_s": figures.ttft_p90_s,
        "ttft_p99_s": figures.ttft_p99_s,
        "tpot_p50_s": percentile(tpot, 50),
        "tpot_p99_s": percentile(tpot, 99),
        "slo_attainment": figures.slo_attainment,
        "requests": figures.requests,
        "completed": figures.completed,
        "dropped": figures.dropped,
        "cold_starts": run.cold_starts,
        "prewarm_hits": run.prewarm_hits,
        "gpu_busy_s": round(run.gpu_busy_s, 3),
        "scheduler_held_ticks": run.held_ticks,
        "scheduler_excluded_ticks": run.excluded_ticks,
    }


def table(figures: dict[str, dict[str, Any]]) -> str:
    """A plain-text table, one row per policy."""
    heads = (  # the names warmserve local's table uses for the same figures, with their units
        "policy",
        "TTFT mean (s)",
        "p50",
        "p90",
        "p99",
        "TPOT p50 (s)",
        "p99",
        "SLO met",
        "requests",
        "completed",
        "dropped",
        "cold starts",
        "prewarm hits",
        "GPU busy (s)",
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
