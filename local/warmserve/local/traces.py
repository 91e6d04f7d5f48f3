"""The trace a replay plays, as per-model rate series: the shipped sample or any trace by path.

Rate traces (ServeGen folders, rate CSVs) are used as they are. A per-request trace (Azure, Mooncake, any
CSV/JSONL :func:`~warmserve.operator.forecast.traces.read_trace` reads) is binned into
``REQUEST_WINDOW_SEC`` windows first (rate = arrivals / window, cv = 1); its own arrival times are not
replayed one by one, so the same sampling applies to every trace. A trace with no request raises
:class:`InvalidFieldError` on ``trace``.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np

from warmserve.operator.forecast.traces import RateSeries, RequestSeries, read_trace
from warmserve.protocol.errors import InvalidFieldError

SAMPLE = "servegen_language_600s.csv"
REQUEST_WINDOW_SEC = 60.0


def load_rates(path: Path | None) -> tuple[RateSeries, ...]:
    """The rate series of the trace at ``path``, or of the shipped sample when ``path`` is None."""
    if path is None:
        with resources.as_file(resources.files("warmserve.operator") / "data" / SAMPLE) as sample:
            trace = read_trace(sample)
    else:
        trace = read_trace(path)
    arrivals = [s.arrival_sec for s in trace if isinstance(s, RequestSeries) and len(s.arrival_sec)]
    first = min((float(a[0]) for a in arrivals), default=0.0)  # every model binned on one grid
    start = math.floor(first / REQUEST_WINDOW_SEC) * REQUEST_WINDOW_SEC
    out = tuple(s if isinstance(s, RateSeries) else binned(s, REQUEST_WINDOW_SEC, start) for s in trace)
    if not out:
        raise InvalidFieldError("trace", "a trace with at least one model", str(path))
    return out


def binned(series: RequestSeries, window_sec: float, start: float | None = None) -> RateSeries:
    """Arrival counts per window as a rate series from ``start`` (at most the first arrival; default: the
    start of the window holding it). The models of one trace are binned from one start, so that their
    windows line up."""
    if len(series.arrival_sec) == 0:
        raise InvalidFieldError("trace", f"requests for model {series.model}", 0)
    if start is None:
        start = math.floor(float(series.arrival_sec[0]) / window_sec) * window_sec
    index = np.floor((series.arrival_sec - start) / window_sec).astype(int)
    counts = np.bincount(index, minlength=int(index.max()) + 1).astype(float)
    return RateSeries(series.model, start, window_sec, counts / window_sec, np.ones(len(counts)))
