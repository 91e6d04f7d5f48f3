"""The figures of a run, under the stable JSON keys documented in docs/simulator.md.

The request figures (TTFT, SLO attainment, completed and dropped requests) have the replay library's one
definition (:mod:`warmserve.replay.figures`), which ``warmserve local`` reports too: every request counts,
one that never got a first token with an infinite TTFT. TPOT is over completed requests with more than one
output token. Requests of the warm-up (``RunResult.measured``) are
left out of every figure but the run-wide counters (cold starts, prewarm hits, GPU time). GPU-hours are the
hours GPUs held a replica (loading, prewarmed or serving) over the replay, what an elastic cluster pays for;
GPU busy seconds are those they computed. :func:`per_model` gives each model's TTFT and SLO attainment, by the
same definition.
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
    "gpu_hours",
)
#: The per-model figures (:func:`per_model`).
MODEL_KEYS: tuple[str, ...] = ("requests", "ttft_p50_s", "ttft_p99_s", "slo_attainment")


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
        "gpu_hours": round(run.gpu_held_s / 3600.0, 3),
        "scheduler_held_ticks": run.held_ticks,
        "scheduler_excluded_ticks": run.excluded_ticks,
    }


def per_model(run: RunResult) -> dict[str, dict[str, float | int | None]]:
    """Each model's measured requests, TTFT p50/p99 and SLO attainment under :data:`MODEL_KEYS`."""
    keep = run.measured()
    out: dict[str, dict[str, float | int | None]] = {}
    for index, name in enumerate(run.models):
        mine = keep & (run.model == index)
        f = request_figures(run.arrival[mine], run.first_token[mine], run.finish[mine], run.slo[mine])
        out[name] = {
            "requests": f.requests,
            "ttft_p50_s": f.ttft_p50_s,
            "ttft_p99_s": f.ttft_p99_s,
            "slo_attainment": f.slo_attainment,
        }
    return out


def model_table(models: dict[str, dict[str, dict[str, Any]]], notes: dict[str, str]) -> str:
    """One row per model and policy: requests, TTFT p50/p99, SLO met, and how the model was sized."""
    rows: list[tuple[str, ...]] = [("model", "policy", "requests", "TTFT p50 (s)", "p99", "SLO met", "size")]
    for policy, figures in models.items():
        for name, f in figures.items():
            met = "-" if f["slo_attainment"] is None else f"{f['slo_attainment']:.2%}"
            rows.append(
                (
                    name,
                    policy,
                    str(f["requests"]),
                    _fmt(f["ttft_p50_s"]),
                    _fmt(f["ttft_p99_s"]),
                    met,
                    notes.get(name, ""),
                )
            )
    return _aligned(rows, left_last=True)


def sweep_table(attained: dict[str, dict[int, float]], smallest: dict[str, int | None], target: float) -> str:
    """SLO attainment per policy and total GPU count, and the smallest count that attains ``target``."""
    counts = sorted({count for shares in attained.values() for count in shares})
    heads = ("policy", *(f"{count} GPUs" for count in counts), f"fewest GPUs at >= {target:.0%} SLO")
    rows: list[tuple[str, ...]] = [heads]
    for name, shares in attained.items():
        least = smallest[name]
        rows.append((name, *(f"{shares[c]:.2%}" for c in counts), "none" if least is None else str(least)))
    return _aligned(rows)


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
        "GPU-hours",
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
                f"{f['gpu_hours']:.2f}",
            )
        )
    return _aligned(rows)


def _aligned(rows: list[tuple[str, ...]], left_last: bool = False) -> str:
    """Columns right-aligned (numbers), the last one left-aligned if it is prose."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.rjust(w) for c, w in zip(row, widths, strict=True)]
        if left_last:
            cells[-1] = row[-1]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "inf" if value is None else f"{value:.3f}"
