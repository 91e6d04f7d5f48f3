"""The figure of a ``warmserve simulate`` run: TTFT CDFs per policy, and one model's timeline (load,
forecast mean and peak, prewarmed and serving replicas) under each policy that has a scheduler."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from warmserve.sim.simulator import RunResult


def plot(runs: Mapping[str, RunResult], path: Path) -> None:
    """Write the figure to ``path`` (any format matplotlib knows from the suffix)."""
    fig, (cdf, timeline) = plt.subplots(2, 1, figsize=(11, 8))
    for name, run in runs.items():
        keep = run.measured()
        first = run.first_token[keep]
        ttft = np.sort(np.where(np.isfinite(first), first - run.arrival[keep], np.inf))
        shown = ttft[np.isfinite(ttft)]
        if len(shown):  # a policy that served nothing has no curve, so no legend entry either
            cdf.plot(np.maximum(shown, 1e-4), np.arange(1, len(shown) + 1) / len(ttft), label=name)
    cdf.set_xscale("log")
    cdf.set_xlabel("TTFT (s)")
    cdf.set_ylabel("fraction of requests")
    cdf.set_title("TTFT CDF (requests never served stay above the curve)")
    _legend_beside(cdf)
    cdf.grid(True, which="both", alpha=0.3)
    with_timeline = [(n, r) for n, r in runs.items() if r.timeline]
    if with_timeline:
        name, run = with_timeline[0]
        rows = np.array(run.timeline, dtype=float)
        hours = rows[:, 0] / 3600
        timeline.plot(hours, rows[:, 1], label="load (in flight + queued)", alpha=0.6)
        timeline.plot(hours, rows[:, 2], label="forecast mean")
        timeline.plot(hours, rows[:, 3], label="forecast peak")
        timeline.step(hours, rows[:, 4], label="prewarmed replicas", where="post")
        timeline.step(hours, rows[:, 5], label="serving replicas", where="post")
        timeline.set_title(f"{run.timeline_model} under {name}")
        timeline.set_xlabel("hours")
        _legend_beside(timeline)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _legend_beside(axes: Axes) -> None:
    """The legend right of the plot, where it cannot cover a curve."""
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
