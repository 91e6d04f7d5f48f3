"""The daily shape models share, borrowed by a model whose own history is too short to have one.

A new or sparse model has a handful of windows: too few for any forecaster to learn when in the day its
load comes. Models served together often follow the same day (users' working hours), so such a model
borrows the shape pooled from the others: each model with at least a full day of history contributes its
mean load by time of day divided by its own mean (so a busy model weighs as much as a quiet one), and the
pooled shape is the mean of those profiles. The sparse model's forecast is its own mean level times the
shape at the window's time of day (docs/forecasting.md, section 4, "The next window").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from warmserve.operator.forecast.concurrency import LoadSeries
from warmserve.operator.forecast.series import FloatArray


def _phases(load: LoadSeries, windows: int) -> FloatArray:
    """The time-of-day slot (0 … windows_per_day − 1) of each of ``windows`` windows from the series' start,
    aligned on absolute time so that models starting at different times line up."""
    first = round(load.start_sec / load.window_sec)
    return np.asarray((first + np.arange(windows)) % load.windows_per_day, dtype=np.float64)


def daily_shape(loads: Sequence[LoadSeries], window_sec: float) -> tuple[FloatArray, int] | None:
    """The pooled peak shape by time of day (mean 1) of the models in ``loads`` with ``window_sec``
    windows and a value in every slot of the day, and how many models it pools; ``None`` if none has."""
    profiles = []
    for load in loads:
        period = load.windows_per_day
        usable = np.isfinite(load.peak)
        if load.window_sec != window_sec or len(load.peak) < period or not usable.any():
            continue
        slots = _phases(load, len(load.peak))[usable].astype(int)
        counts = np.bincount(slots, minlength=period)
        sums = np.bincount(slots, weights=load.peak[usable], minlength=period)
        if (counts == 0).any() or sums.sum() <= 0:
            continue
        profile = sums / counts
        profiles.append(profile / profile.mean())
    return (np.mean(profiles, axis=0), len(profiles)) if profiles else None


def borrowed(load: LoadSeries, shape: FloatArray) -> tuple[float, float]:
    """Mean and peak of the window after ``load`` ends: its own mean level (0 with no data) times the
    pooled ``shape`` at that window's time of day."""
    slot = int(_phases(load, len(load.peak) + 1)[-1])
    level = [float(np.nanmean(v)) if np.isfinite(v).any() else 0.0 for v in (load.mean, load.peak)]
    return level[0] * float(shape[slot]), level[1] * float(shape[slot])
