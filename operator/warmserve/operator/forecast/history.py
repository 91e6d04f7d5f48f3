"""One model's demand history as the operator keeps it: mean and peak concurrency per closed window, on a
grid of whole windows since the epoch, and the two forms it is kept in across restarts (docs/operator.md):

- a JSON document (the ConfigMap ``spec.forecast.history.source: configMap`` names): :meth:`History.to_json`,
  :func:`history_from_json`;
- Prometheus range queries over the gateways' per-model gauges (``source: prometheus``):
  :func:`prometheus_queries` and :func:`history_from_prometheus`.

Window ``k`` covers epoch seconds ``[k·W, (k+1)·W)``; a NaN is a window nothing was observed in (a gap the
forecasters tolerate). Pure: no HTTP, no Kubernetes client; the operator's adapter does the I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from warmserve.operator.forecast.concurrency import LoadSeries
from warmserve.protocol.errors import InvalidFieldError, InvalidInputError

#: The gateway's per-model demand gauges (gateway/warmserve/gateway/metrics.py); their sum is the demand
#: the scheduler observes (``Demand.total``).
DEMAND_GAUGES = ("warmserve_gateway_inflight_requests", "warmserve_gateway_queued_requests")
#: The most points Prometheus returns per series and query (it refuses more than 11,000).
PROMETHEUS_MAX_POINTS = 10_000
#: Decimals kept in the JSON form: concurrency to 1/10,000 of a request is plenty, and it keeps a
#: two-week history of one-minute windows well under a ConfigMap's 1 MiB.
DECIMALS = 4


@dataclass(frozen=True, slots=True)
class History:
    """Mean and peak concurrency of the closed windows ``first .. end - 1``, ``window_s`` seconds each."""

    window_s: int
    first: int
    mean: tuple[float, ...] = ()
    peak: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.window_s < 1:
            raise InvalidFieldError("window_s", "at least one second", self.window_s)
        if len(self.mean) != len(self.peak):
            raise InvalidFieldError("peak", f"as many windows as mean ({len(self.mean)})", len(self.peak))

    @property
    def end(self) -> int:
        """The window after the last closed one."""
        return self.first + len(self.mean)

    def load(self, model: str) -> LoadSeries:
        """As the forecasters read it (its daily period: :attr:`LoadSeries.windows_per_day`)."""
        return LoadSeries(
            model,
            float(self.first * self.window_s),
            float(self.window_s),
            np.array(self.mean, dtype=float),
            np.array(self.peak, dtype=float),
        )

    def appended(self, index: int, mean: float, peak: float) -> History:
        """With window ``index`` (after :attr:`end`) closed; the windows between are gaps (NaN)."""
        if self.mean and index < self.end:
            raise InvalidFieldError("index", f"a window after the last closed one ({self.end - 1})", index)
        if not self.mean:  # the first window: the history starts there (whatever ``first`` said)
            return History(self.window_s, index, (mean,), (peak,))
        gap = (math.nan,) * (index - self.end)
        return History(self.window_s, self.first, (*self.mean, *gap, mean), (*self.peak, *gap, peak))

    def bounded(self, windows: int) -> History:
        """The last ``windows`` windows (the retention)."""
        drop = max(0, len(self.mean) - windows)
        return History(self.window_s, self.first + drop, self.mean[drop:], self.peak[drop:])

    def before(self, index: int) -> History:
        """The windows before ``index``."""
        keep = max(0, min(len(self.mean), index - self.first))
        return History(self.window_s, self.first, self.mean[:keep], self.peak[:keep])

    def to_json(self) -> str:
        """The document kept in a ConfigMap; gaps are ``null``."""
        return json.dumps(
            {
                "windowSeconds": self.window_s,
                "firstWindow": self.first,
                "mean": _rounded(self.mean),
                "peak": _rounded(self.peak),
            },
            separators=(",", ":"),
        )


def history_from_json(text: str) -> History:
    """The inverse of :meth:`History.to_json`; :class:`InvalidInputError` names what is wrong (a document
    edited by hand, or written by another version)."""
    try:
        doc = json.loads(text)
        return History(
            int(doc["windowSeconds"]),
            int(doc["firstWindow"]),
            tuple(math.nan if v is None else float(v) for v in doc["mean"]),
            tuple(math.nan if v is None else float(v) for v in doc["peak"]),
        )
    except (ValueError, TypeError, KeyError, InvalidFieldError) as exc:
        raise InvalidInputError(f"not a forecast history document: {exc}") from exc


def _rounded(values: Sequence[float]) -> list[float | None]:
    return [round(v, DECIMALS) if math.isfinite(v) else None for v in values]


@dataclass(frozen=True, slots=True)
class RangeQuery:
    """One ``/api/v1/query_range`` request: its PromQL and its grid (epoch seconds)."""

    mean: str
    peak: str
    start: float
    end: float
    step: float

    def params(self, query: str) -> dict[str, str]:
        return {"query": query, "start": str(self.start), "end": str(self.end), "step": str(self.step)}


def prometheus_queries(model: str, window_s: int, windows: int, now: float) -> tuple[RangeQuery, ...]:
    """The range queries giving the last ``windows`` closed windows before ``now``: the mean and the
    maximum over each window of the gateways' in-flight plus queued requests for ``model``, summed over
    the gateways. The value at grid time ``t`` covers ``(t - W, t]``, window ``t/W - 1``. Split in pieces
    of at most :data:`PROMETHEUS_MAX_POINTS` points."""
    label = json.dumps(model)  # a PromQL string literal: the same escapes as JSON's
    demand = " + ".join(f"sum({g}{{model={label}}})" for g in DEMAND_GAUGES)
    resolution = max(1, window_s // 20)  # samples per window of the subquery: about twenty
    mean = f"avg_over_time(({demand})[{window_s}s:{resolution}s])"
    peak = f"max_over_time(({demand})[{window_s}s:{resolution}s])"
    last = math.floor(now / window_s)  # the open window: its end is not yet reached
    first = max(0, last - windows)
    queries = []
    for start in range(first, last, PROMETHEUS_MAX_POINTS):
        stop = min(last, start + PROMETHEUS_MAX_POINTS)
        # Grid time (k + 1)·W holds window k.
        queries.append(
            RangeQuery(mean, peak, float((start + 1) * window_s), float(stop * window_s), float(window_s))
        )
    return tuple(queries)


def history_from_prometheus(
    window_s: int, windows: int, now: float, answers: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]
) -> History:
    """The history the answers to :func:`prometheus_queries` (``(mean answer, peak answer)`` per query, the
    decoded JSON bodies) describe; a window Prometheus has no value for is a gap. Raises
    :class:`InvalidInputError` on a body that is not a successful matrix answer."""
    last = math.floor(now / window_s)
    first = max(0, last - windows)
    mean = np.full(last - first, np.nan)
    peak = np.full(last - first, np.nan)
    for mean_answer, peak_answer in answers:
        for answer, into in ((mean_answer, mean), (peak_answer, peak)):
            for t, value in _matrix_points(answer):
                k = round(t / window_s) - 1 - first
                if 0 <= k < len(into) and math.isfinite(value):
                    into[k] = value
    peak = np.fmax(peak, mean)  # a sampled maximum below the sampled mean cannot be; NaN stays a gap
    history = History(window_s, first, tuple(float(v) for v in mean), tuple(float(v) for v in peak))
    finite = np.flatnonzero(np.isfinite(mean))
    if not len(finite):
        return History(window_s, last)
    return History(
        window_s, first + int(finite[0]), history.mean[finite[0] :], history.peak[finite[0] :]
    ).before(first + int(finite[-1]) + 1)


def _matrix_points(answer: Mapping[str, Any]) -> list[tuple[float, float]]:
    """Every (time, value) of a ``query_range`` answer (summed to one series: at most one here)."""
    try:
        if answer["status"] != "success" or answer["data"]["resultType"] != "matrix":
            raise InvalidInputError(f"not a successful matrix answer: {str(answer)[:200]}")
        return [(float(t), float(v)) for series in answer["data"]["result"] for t, v in series["values"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"not a Prometheus query_range answer: {exc}") from exc
