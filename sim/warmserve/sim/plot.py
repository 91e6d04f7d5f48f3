"""The figure of a ``warmserve simulate`` run: TTFT CDFs per policy, and below them the timeline (load,
forecast mean and peak, prewarmed and serving replicas) of every model that served, under the first
policy that has a scheduler.

One small panel per model, busiest (most requests served) first, two to a row. Beyond :data:`PANELS`
models, the ``PANELS - 1`` busiest keep their panels and the rest are summed into one last panel titled
with how many it holds, so a run of many models stays a readable figure. Legends sit right of the panels,
never over a curve, and list only what is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from warmserve.operator.forecast.traces import FloatArray
from warmserve.sim.simulator import RunResult

#: Most timeline panels in one figure (the last sums the models beyond the busiest ``PANELS - 1``).
PANELS = 8
#: The series of a timeline row after its time: (column, label, drawn as steps).
SERIES = (
    (1, "load (in flight + queued)", False),
    (2, "forecast mean", False),
    (3, "forecast peak", False),
    (4, "prewarmed replicas", True),
    (5, "serving replicas", True),
)


def plot(runs: Mapping[str, RunResult], path: Path) -> None:
    """Write the figure to ``path`` (any format matplotlib knows from the suffix)."""
    fig = figure(runs)
    fig.savefig(path)
    plt.close(fig)


def figure(runs: Mapping[str, RunResult]) -> Figure:
    """The whole figure: the CDF panel on top, then the timeline panels of :func:`timeline_panels`."""
    timed = next(((name, run) for name, run in runs.items() if _has_timeline(run)), None)
    panels = timeline_panels(timed[1]) if timed is not None else []
    rows = 1 + math.ceil(len(panels) / 2)
    fig = plt.figure(figsize=(13, 3.4 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 2)
    _draw_cdf(fig.add_subplot(grid[0, :]), runs)
    drawn: list[Axes] = []
    for k, (title, rows_of_model) in enumerate(panels):
        axes = fig.add_subplot(grid[1 + k // 2, k % 2], sharex=drawn[0] if drawn else None)
        _draw_timeline(axes, rows_of_model, f"{title} under {timed[0] if timed else ''}")
        drawn.append(axes)
    if drawn:  # one legend for every panel, right of the top-right one: outside every panel
        labelled: dict[str, Artist] = {}
        for a in drawn:
            handles, labels = a.get_legend_handles_labels()
            labelled.update(zip(labels, handles, strict=True))
        right = drawn[min(1, len(drawn) - 1)]
        right.legend(
            list(labelled.values()),
            list(labelled),
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize="small",
        )
    return fig


def timeline_panels(run: RunResult) -> list[tuple[str, FloatArray]]:
    """(title, rows) of every model that served a request, busiest first; beyond :data:`PANELS` models,
    the rest summed into one panel titled ``other N models (summed)``."""
    served = np.bincount(run.model[np.isfinite(run.first_token)], minlength=len(run.models))
    order = [i for i in np.argsort(-served, kind="stable") if served[i] > 0]
    own = order if len(order) <= PANELS else order[: PANELS - 1]
    panels = [(run.models[i], run.timeline[run.models[i]]) for i in own]
    rest = order[len(own) :]
    if rest:
        summed = _summed([run.timeline[run.models[i]] for i in rest])
        panels.append((f"other {len(rest)} models (summed)", summed))
    return panels


def _has_timeline(run: RunResult) -> bool:
    return any(len(rows) for rows in run.timeline.values())


def _summed(timelines: list[FloatArray]) -> FloatArray:
    """Rows of several models added up (the time column kept); a forecast none of them has stays NaN."""
    stacked = np.stack(timelines)
    out: FloatArray = np.nansum(stacked, axis=0)
    out[:, 0] = stacked[0, :, 0]
    out[np.all(np.isnan(stacked), axis=0)] = np.nan
    return out


def _draw_cdf(axes: Axes, runs: Mapping[str, RunResult]) -> None:
    low = math.inf
    for name, run in runs.items():
        keep = run.measured()
        first = run.first_token[keep]
        ttft = np.sort(np.where(np.isfinite(first), first - run.arrival[keep], np.inf))
        shown = np.maximum(ttft[np.isfinite(ttft)], 1e-4)
        if len(shown):  # a policy that served nothing has no curve, so no legend entry either
            axes.plot(shown, np.arange(1, len(shown) + 1) / len(ttft), label=name)
            low = min(low, float(shown[0]))
    axes.set_xscale("log")
    _readable_log_ticks(axes)
    axes.set_xlabel("TTFT (s)")
    axes.set_ylabel("fraction of requests")
    axes.set_title("TTFT CDF (requests never served stay above the curve)")
    if math.isfinite(low):
        _legend_beside(axes)
    axes.grid(True, which="both", alpha=0.3)


def _readable_log_ticks(axes: Axes) -> None:
    """Labels at decades only (1-2-5 within a decade when the axis spans less than two), plain numbers;
    minor ticks unlabelled, so labels never crowd into each other."""
    low, high = axes.get_xlim()
    decades = math.log10(high / low) if low > 0 and high > low else 0.0
    subs = (1.0,) if decades >= 2 else (1.0, 2.0, 5.0)
    axes.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())


def _draw_timeline(axes: Axes, rows: FloatArray, title: str) -> None:
    """One model's series (a forecast the policy does not have, all NaN, is not drawn or listed); each
    series has the same colour in every panel."""
    hours = rows[:, 0] / 3600
    for column, label, steps in SERIES:
        values, colour = rows[:, column], f"C{column - 1}"
        if np.all(np.isnan(values)):
            continue
        if steps:
            axes.step(hours, values, label=label, where="post", color=colour)
        else:
            axes.plot(hours, values, label=label, color=colour, alpha=0.6 if column == 1 else 1.0)
    axes.set_title(title, fontsize="medium")
    axes.set_xlabel("hours")
    axes.grid(True, alpha=0.3)


def _legend_beside(axes: Axes) -> None:
    """The legend right of the plot, where it cannot cover a curve."""
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
