"""Request arrivals for a replay: a slice of a rate trace, time-compressed, rescaled, sampled with a seed.

A rate trace gives each model's mean request rate per window. The replay plays the trace interval
``[start_sec, start_sec + span_sec)`` in ``span_sec / compress`` local seconds: trace window ``i`` becomes a
local window ``compress`` times shorter. Rates are multiplied by one factor for all models, chosen so that
the replay's mean total rate is ``rps`` (so the relative load of the models and its shape over the day are
the trace's, and the absolute load is what the local machine can take). A model's arrivals are the replay
library's one process (:mod:`warmserve.replay.arrivals`, as in ``warmserve simulate``) with a CV of 1, a
Poisson process within each window: at the usual compression a window lasts well under a second, so the
trace's within-window burstiness (``cv``) is not replayed. A window the trace has no data for (NaN) has no
arrivals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from warmserve.operator.forecast.traces import RateSeries
from warmserve.protocol.errors import InvalidFieldError
from warmserve.replay.arrivals import window_arrivals


@dataclass(frozen=True, slots=True)
class ReplaySlice:
    """Which part of the trace to replay and how: trace seconds, compression factor, mean local req/s."""

    start_sec: float
    span_sec: float
    compress: float
    rps: float
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("span_sec", "compress", "rps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidFieldError(name, "a finite number > 0", value)
        if not math.isfinite(self.start_sec):
            raise InvalidFieldError("start_sec", "a finite number of seconds", self.start_sec)

    @property
    def duration_s(self) -> float:
        """Local seconds the replay lasts."""
        return self.span_sec / self.compress

    def local(self, trace_sec: float) -> float:
        """Local replay time of trace time ``trace_sec`` (negative before the slice)."""
        return (trace_sec - self.start_sec) / self.compress


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request to send: local seconds after the replay starts, and the model it is for."""

    at_s: float
    model: str


def rate_scale(series: Sequence[RateSeries], replay: ReplaySlice) -> float:
    """The factor that makes the slice's mean total rate ``replay.rps``.

    Raises :class:`InvalidFieldError` (field ``trace``) when the slice holds no request at all, or so
    few (rates near the smallest floats) that no finite factor scales them to ``replay.rps``.
    """
    total = 0.0
    for s in series:
        for i, rate in enumerate(s.rate_rps):
            overlap = _overlap(s.start_sec + i * s.window_sec, s.window_sec, replay)
            if overlap > 0 and math.isfinite(rate):
                total += float(rate) * overlap
    scale = replay.rps * replay.span_sec / total if total > 0 else math.inf
    if not math.isfinite(scale):
        where = f"[{replay.start_sec}, {replay.start_sec + replay.span_sec}) s"
        raise InvalidFieldError("trace", f"some requests in {where} (a total rate that can be scaled)", total)
    return scale


def sample_arrivals(series: Sequence[RateSeries], replay: ReplaySlice) -> tuple[Arrival, ...]:
    """Every arrival of the replay, sorted by time (then model); the same inputs give the same output."""
    rng = np.random.default_rng(replay.seed)
    out: list[Arrival] = []
    for s in sorted(replay_rates(series, replay), key=lambda s: s.model):
        first = max(0, math.floor((replay.start_sec - s.start_sec) / s.window_sec))
        end = replay.start_sec + replay.span_sec
        count = min(len(s.rate_rps), math.ceil((end - s.start_sec) / s.window_sec)) - first
        if count <= 0:
            continue
        begin = replay.local(s.start_sec + first * s.window_sec)  # replay time of window ``first``
        times = begin + window_arrivals(s, first, count, replay.compress, 1.0, math.inf, rng)
        out.extend(Arrival(float(t), s.model) for t in times if 0.0 <= t < replay.duration_s)
    return tuple(sorted(out, key=lambda a: (a.at_s, a.model)))


def replay_rates(series: Sequence[RateSeries], replay: ReplaySlice) -> tuple[RateSeries, ...]:
    """The series as the replay plays them, still in trace time: rates multiplied by :func:`rate_scale`
    and divided by the compression (requests per trace second; the replay plays them ``compress`` times
    faster), with a CV of 1 (Poisson within a window, see the module docstring)."""
    scale = rate_scale(series, replay) / replay.compress
    return tuple(replace(s, rate_rps=s.rate_rps * scale, cv=np.ones(len(s.rate_rps))) for s in series)


def _overlap(begin: float, length: float, replay: ReplaySlice) -> float:
    """Trace seconds of ``[begin, begin + length)`` inside the slice."""
    return max(0.0, min(begin + length, replay.start_sec + replay.span_sec) - max(begin, replay.start_sec))
