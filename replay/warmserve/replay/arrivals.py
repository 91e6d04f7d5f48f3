"""The one arrival process of a replay: a Gamma renewal process per window of a rate series.

Within each window, arrivals are a Gamma renewal process with the window's rate and inter-arrival CV
(Poisson when the CV is missing), as ServeGen samples them, the CV clipped at ``max_cv`` (a CV measured at a
client's real rate makes, at the few requests/s a replay gives a model, bursts that no policy could serve);
a window with no finite positive rate has no arrivals. The replay plays trace seconds ``time_scale`` times
faster: a window lasts ``window_sec / time_scale`` replay seconds and its rate is multiplied by
``time_scale``. ``warmserve simulate`` replays each window's CV; ``warmserve local`` gives its series a CV
of 1 (Poisson), as its compressed windows last well under a second.

How a window's process starts is a :class:`WindowStart`. ``stationary`` is exact: the first arrival comes at
the process's forward recurrence time (a uniform fraction of a length-biased gap, ``Gamma(k + 1)`` for gaps
``Gamma(k)``), so every window gets its rate × length arrivals on average, however short it is. ``phase``,
the simulator's, starts each window's first arrival a uniform phase of one mean gap plus a whole gap in: a
window gets about ``1 - CV² / 2`` fewer arrivals than its rate gives (half an arrival for Poisson; above a
CV of √2, more than it gives), which is small against the tens to thousands of requests a model gets in one
of the simulator's 600 s windows, but everything in a window shorter than a gap. The simulator keeps it so
that its figures stay those measured so far; moving it to ``stationary`` changes them slightly and wants a
new baseline.
"""

from __future__ import annotations

import enum
import math

import numpy as np

from warmserve.operator.forecast.traces import FloatArray, RateSeries


class WindowStart(enum.Enum):
    """When the first arrival of a window comes (see the module docstring)."""

    STATIONARY = "stationary"
    PHASE = "phase"


def window_arrivals(
    series: RateSeries,
    first: int,
    count: int,
    time_scale: float,
    max_cv: float,
    until: float,
    rng: np.random.Generator,
    start: WindowStart = WindowStart.STATIONARY,
) -> FloatArray:
    """Arrivals in windows ``first`` to ``first + count - 1`` of ``series``, in replay seconds from the
    start of window ``first``, before ``until``; sorted. The draws come from ``rng`` in window order, so
    the same generator state gives the same arrivals."""
    window = series.window_sec / time_scale
    out = []
    for w in range(count):
        rate = series.rate_rps[first + w] * time_scale
        if not (math.isfinite(rate) and rate > 0):
            continue
        cv = min(series.cv[first + w], max_cv)
        shape = 1.0 / cv**2 if math.isfinite(cv) and cv > 0 else 1.0
        expected = rate * window
        n = int(expected + 6 * math.sqrt(expected) * max(cv if math.isfinite(cv) else 1.0, 1.0) + 10)
        gaps = rng.gamma(shape, 1.0 / (rate * shape), size=n)
        if start is WindowStart.PHASE:
            t = np.cumsum(gaps) + rng.uniform(0.0, 1.0 / rate)
        else:
            gaps[0] = rng.uniform() * rng.gamma(shape + 1.0, 1.0 / (rate * shape))
            t = np.cumsum(gaps)
        out.append(w * window + t[t < window])
    arrival = np.concatenate(out) if out else np.zeros(0)
    return np.asarray(arrival[arrival < until], dtype=float)
