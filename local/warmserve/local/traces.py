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

from warmserve.operator.forecast.traces import RateSeries, RequestSeries, binned, read_trace
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
