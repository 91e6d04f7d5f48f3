"""The ``simulate --plot`` figure, inspected through matplotlib's own objects: a panel per model that
served (the busiest, then the rest summed and labelled so), legends only of what is drawn and outside
every panel, log-axis labels that do not overlap."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from warmserve.sim.plot import PANELS, figure
from warmserve.sim.simulator import RunResult

SAMPLES = 30


def run_of(served: list[int], policy: str = "warmserve", scheduled: bool = True) -> RunResult:
    """A run of ``len(served)`` models in which model ``k`` served ``served[k]`` requests (one more that
    never got a first token each), with a timeline whose load is ``k + 1`` throughout."""
    model = np.repeat(np.arange(len(served)), [n + 1 for n in served])
    arrival = np.linspace(0.0, 3600.0, len(model))
    first = arrival + np.geomspace(1e-3, 30.0, len(model))
    first[np.r_[0, np.cumsum([n + 1 for n in served])[:-1]]] = np.nan  # each model's first: never served
    times = np.linspace(0.0, 3600.0, SAMPLES)
    names = tuple(f"m{k:02d}" for k in range(len(served)))
    timeline = {
        name: np.column_stack(
            [times, np.full(SAMPLES, k + 1.0), np.full(SAMPLES, k + 0.5), np.full(SAMPLES, k + 2.0),
             np.ones(SAMPLES), np.ones(SAMPLES)]
        ) if scheduled else np.zeros((0, 6))
        for k, name in enumerate(names)
    }  # fmt: skip
    return RunResult(
        policy, arrival, first, first + 1.0, np.ones(len(model)), np.ones(len(model)), 0, 0, 0.0,
        model, names, timeline,
    )  # fmt: skip


@pytest.fixture
def close() -> Iterator[list[Figure]]:
    figures: list[Figure] = []
    yield figures
    for fig in figures:
        plt.close(fig)


def panels(fig: Figure) -> dict[str, list[str]]:
    """Each timeline panel's title and the labels of the lines drawn in it."""
    return {a.get_title(): [line.get_label() for line in a.get_lines()] for a in fig.axes[1:]}


def test_every_model_that_served_has_a_panel_and_one_that_did_not_has_none(close: list[Figure]) -> None:
    fig = figure({"warmserve": run_of([5, 0, 20]), "muxserve": run_of([5, 0, 20], "muxserve", False)})
    close.append(fig)
    assert list(panels(fig)) == ["m02 under warmserve", "m00 under warmserve"]  # busiest first, m01 absent
    assert all(labels[0] == "load (in flight + queued)" for labels in panels(fig).values())
    cdf = fig.axes[0]
    assert [t.get_text() for t in cdf.get_legend().get_texts()] == ["warmserve", "muxserve"]


def test_beyond_the_panel_limit_the_rest_are_summed_and_labelled(close: list[Figure]) -> None:
    served = [10 + k for k in range(12)]  # m11 busiest
    fig = figure({"warmserve": run_of(served)})
    close.append(fig)
    titles = list(panels(fig))
    assert len(titles) == PANELS
    assert titles[: PANELS - 1] == [f"m{k:02d} under warmserve" for k in range(11, 11 - (PANELS - 1), -1)]
    assert titles[-1] == f"other {12 - (PANELS - 1)} models (summed) under warmserve"
    load = fig.axes[-1].get_lines()[0].get_ydata()
    assert np.allclose(load, sum(k + 1.0 for k in range(12 - (PANELS - 1))))  # m00..m04 added up


def test_a_forecast_the_policy_lacks_is_neither_drawn_nor_listed(close: list[Figure]) -> None:
    run = run_of([3, 3])
    for rows in run.timeline.values():
        rows[:, 2:4] = np.nan  # autoscale: no forecast
    fig = figure({"autoscale": run})
    close.append(fig)
    legend = next(a.get_legend() for a in fig.axes[1:] if a.get_legend() is not None)
    listed = [t.get_text() for t in legend.get_texts()]
    assert listed == ["load (in flight + queued)", "prewarmed replicas", "serving replicas"]
    assert all(labels == listed for labels in panels(fig).values())


def test_legends_cover_no_panel_and_log_labels_do_not_overlap(close: list[Figure]) -> None:
    fig = figure({"warmserve": run_of([10 + k for k in range(12)]), "autoscale": run_of([4] * 12)})
    close.append(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    legends = [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    assert len(legends) == 2  # the CDF's and the timelines' one
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(a.get_window_extent(renderer)) for a in fig.axes)
    labels = [t for t in fig.axes[0].get_xticklabels() if t.get_visible() and t.get_text()]
    assert len(labels) >= 3  # TTFT spans 1 ms to 30 s
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in itertools.pairwise(boxes))
