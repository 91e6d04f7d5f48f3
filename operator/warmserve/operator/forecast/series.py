"""The two shapes of a workload trace, per model: request rates per window (:class:`RateSeries`) and single
requests (:class:`RequestSeries`). Apart from the readers (:mod:`warmserve.operator.forecast.traces`,
which need pandas) so that what only uses the shapes, the operator's forecasts among them, does not load
pandas (docs/operator.md, Floors)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RateSeries:
    """One model's mean request rate per window, on a regular grid.

    ``rate_rps[i]`` covers ``[start_sec + i*window_sec, start_sec + (i+1)*window_sec)``; NaN means the trace
    has no row for that window. ``cv`` is the coefficient of variation of inter-arrival times in the window
    (1 for Poisson arrivals; an aggregate of several clients, see :func:`aggregate_cv`).
    """

    model: str
    start_sec: float
    window_sec: float
    rate_rps: FloatArray
    cv: FloatArray


@dataclass(frozen=True)
class RequestSeries:
    """One model's requests, sorted by arrival; token counts or duration are NaN when the trace lacks them."""

    model: str
    arrival_sec: FloatArray
    input_tokens: FloatArray
    output_tokens: FloatArray
    duration_sec: FloatArray


Trace = tuple[RateSeries, ...] | tuple[RequestSeries, ...]
