"""The one arrival process of a replay: a Gamma renewal process per window of a rate series.

Within each window, arrivals are a Gamma renewal process with the window's rate and inter-arrival CV
(Poisson when the CV is missing), as ServeGen samples them, the CV clipped at ``max_cv`` (a CV measured at a
client's real rate makes, at the few requests/s a replay gives a model, bursts that no policy could serve);
a window with no finite positive rate has no arrivals. The replay plays trace seconds ``time_scale`` times
faster: a window lasts ``window_sec / time_scale`` replay seconds and its rate is multiplied by
``time_scale``. ``warmserve simulate`` replays each window's CV; ``warmserve local`` gives its series a CV
of 1 (Poisson), as its compressed windows last well under a second.
"""

from __future__ import annotations

import math

import numpy as np

from warmserve.operator.forecast.traces import FloatArray, RateSeries


def window_arrivals(
    series: RateSeries,
    first: int,
    count: int,
    time_scale: float,
    max_cv: float,
    until: float,
    rng: np.random.Generator,
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
        t = np.cumsum(gaps) + rng.uniform(0.0, 1.0 / rate)
        out.append(w * window + t[t < window])
    arrival = np.concatenate(out) if out else np.zeros(0)
    return np.asarray(arrival[arrival < until], dtype=float)
