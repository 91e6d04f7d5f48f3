"""The simulated workload: a real trace mapped to N models, scaled, and turned into requests.

Rate traces (ServeGen, or a rate CSV): the trace's models, or when there are fewer than ``models`` of
them its clients (ServeGen per-client series), are ranked by total volume and the top ``models`` become
the simulated models ``model-00`` (most popular) to ``model-NN``, each keeping its own daily shape. Their
mean rates over the replay are then set to a power law like the paper's: model i gets a share
``(i+1)^-alpha`` of ``mean_rate_rps`` (the released absolute rates are normalised by the publisher, see
the traces README, so only shapes are taken from them), times ``rate_multiplier`` for load sweeps.
Arrivals are the replay library's one process (:mod:`warmserve.replay.arrivals`, each window started by its
``phase`` rule, which keeps the figures measured so far): within each window a Gamma renewal process with
the window's rate and inter-arrival CV, the CV clipped at ``max_cv``: ServeGen's CVs
were measured at each client's real rate (up to hundreds of requests/s, CV up to ~100 for the busiest
client); at the few requests/s a model gets here, such a CV makes bursts of hundreds of requests within
milliseconds that no policy could serve within a TTFT SLO. The clip applies to every policy alike.

The replay covers ``duration_s`` seconds from the start of day ``day`` (0-based; 7 by default) plus
``offset_s``; the days before it are the forecast history (:mod:`.forecasts`). ``warmup_s`` seconds before
that are replayed too, so that a replay cut from the middle of a day does not start on an empty cluster, but
their requests are not measured (``Workload.measured_from_s``); for a rate trace the warm-up is rounded up to
whole windows of the trace, and the rates are scaled to their means over the measured span. ``time_scale`` > 1
replays the trace faster (trace seconds per simulated second; rates are multiplied by it).

Per-request traces (Azure, Mooncake): arrivals are the trace's own; their token counts are used. A log
with a model column (:func:`~warmserve.operator.forecast.traces.model_column`, read with ``reader``, the
options ``warmserve forecast`` takes) keeps its own models: each request stays with its model and its token
counts, and the models keep the log's names (sorted). A log without one has each request assigned a model by
the same power law as a rate trace. ``day`` and ``offset_s`` count from the trace's first request (day 0 by
default: such traces rarely span days), ``rate_multiplier`` replays the arrivals that much faster (a sweep's
load), and ``mean_rate_rps`` is refused: the trace's own rate is kept. The whole log, each model's arrivals
counted per 300 s window, is the rate history, as a rate trace's series are: the days before the replay are
the forecaster's history and the replay's windows the oracle's, and the baselines are sized from the same
series (a log of a few hours has less than a day of history before any replay: ``history_notes`` says so).

Token lengths for rate traces come from ``lengths``, a per-request trace sampled with the seed (input and
output paired), or else 1024 in / 256 out.

Which options make sense depends on the kind of trace (:func:`trace_kind`): :data:`REFUSED` lists, per kind,
the options refused when set (``--rate`` on a per-request log, ``--models`` on a log with its own models, a
column name on a rate trace, ...), and :func:`refuse_options` is the one check, here and in
:mod:`.scenario` alike. Bad input (an empty trace, a replay past the trace's end, a non-positive rate, an
option the trace's kind does not take) raises :class:`InvalidFieldError` naming the option and what is
accepted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from warmserve.operator.forecast.concurrency import DEFAULT_WINDOW_SEC, SECONDS_PER_DAY
from warmserve.operator.forecast.traces import (
    FloatArray,
    RateSeries,
    ReaderOptions,
    RequestSeries,
    binned,
    detect_format,
    model_column,
    read_trace,
)
from warmserve.protocol.errors import InvalidFieldError
from warmserve.replay.arrivals import WindowStart, window_arrivals

IntArray = npt.NDArray[np.int64]
DEFAULT_LENGTHS = (1024, 256)
DEFAULT_RATE_RPS = 4.0
DEFAULT_RATE_DAY = 7
DEFAULT_MODELS = 8
DEFAULT_ALPHA = 1.0
DEFAULT_MAX_CV = 4.0
#: The windows a per-request log's arrivals are counted in for its rate history: the forecast's own.
HISTORY_WINDOW_SEC = DEFAULT_WINDOW_SEC

#: A rate trace; a per-request log without a model column; a per-request log with one.
TraceKind = Literal["rates", "requests", "models"]
_COLUMNS = ("timestamp-column", "model-column", "input-column", "output-column", "duration-column")
#: Per kind of trace, the options that make no sense for it and are refused when set (the one rule).
REFUSED: Mapping[TraceKind, tuple[str, ...]] = {
    "rates": (*_COLUMNS, "timestamp-unit", "model-sizes"),
    "requests": ("rate", "max-cv", "lengths", "per-client", "model-sizes"),
    "models": ("rate", "max-cv", "lengths", "per-client", "models", "alpha", "shapes"),
}
_WHY: Mapping[TraceKind, str] = {
    "rates": "a rate trace (it has no request columns and its models are synthetic)",
    "requests": "a per-request log (it keeps its own arrivals and token counts)",
    "models": "a per-request log with a model column (it keeps its own models, arrivals and token counts)",
}


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """How to build the workload from ``trace``; see the module docstring for each option."""

    trace: Path
    models: int | None = None  # None: 8 (a log with its own models takes none)
    alpha: float | None = None  # None: 1.0
    mean_rate_rps: float | None = None  # a rate trace's total mean rate (None: 4 requests/s)
    rate_multiplier: float = 1.0
    day: int | None = None  # None: day 7 of a rate trace (history before it), day 0 of a request trace
    offset_s: float = 0.0
    duration_s: float = SECONDS_PER_DAY
    time_scale: float = 1.0
    lengths: Path | None = None
    max_input_tokens: int = 4096
    max_output_tokens: int = 2048
    max_cv: float | None = None  # None: 4.0 (rate traces only)
    seed: int = 0
    warmup_s: float = 0.0
    reader: ReaderOptions = field(default_factory=ReaderOptions)

    def __post_init__(self) -> None:
        positive = {"rate": self.rate_rps, "rate-multiplier": self.rate_multiplier}
        positive |= {"duration": self.duration_s, "time-scale": self.time_scale}
        for option, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise InvalidFieldError(option, "a finite number > 0", value)
        if not (math.isfinite(self.warmup_s) and self.warmup_s >= 0):
            raise InvalidFieldError("warmup", "a finite number of seconds >= 0", self.warmup_s)
        if self.model_count < 1:
            raise InvalidFieldError("models", "an integer >= 1", self.models)
        alpha = self.popularity_alpha
        if (self.day or 0) < 0 or self.offset_s < 0 or not math.isfinite(alpha) or alpha < 0:
            raise InvalidFieldError("day/offset/alpha", "day >= 0, offset >= 0, alpha >= 0", self.day)

    @property
    def model_count(self) -> int:
        """How many synthetic models a rate trace or a log without models is split into."""
        return DEFAULT_MODELS if self.models is None else self.models

    @property
    def popularity_alpha(self) -> float:
        return DEFAULT_ALPHA if self.alpha is None else self.alpha

    @property
    def cv_clip(self) -> float:
        return DEFAULT_MAX_CV if self.max_cv is None else self.max_cv

    def given(self) -> dict[str, object]:
        """The options set by the user (not left to their default), by their command-line names."""
        r = self.reader
        options: dict[str, object] = {
            "rate": self.mean_rate_rps,
            "models": self.models,
            "alpha": self.alpha,
            "max-cv": self.max_cv,
            "lengths": self.lengths,
            "per-client": r.per_client or None,
            "timestamp-unit": None if r.timestamp_unit == "auto" else r.timestamp_unit,
        }
        columns = (r.timestamp_column, r.model_column, r.input_column, r.output_column, r.duration_column)
        options |= dict(zip(_COLUMNS, columns, strict=True))
        return {name: value for name, value in options.items() if value is not None}

    @property
    def rate_rps(self) -> float:
        """The total mean rate a rate trace is scaled to."""
        return DEFAULT_RATE_RPS if self.mean_rate_rps is None else self.mean_rate_rps


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival (simulated seconds from 0), and the scaled rate series behind them.

    ``history`` holds each model's scaled rate series over the whole trace (trace time; a per-request log's
    arrivals counted per window, in seconds from the replay's start); the replay starts at trace second
    ``replay_start_s`` (0 for a per-request log). ``duration_s`` is the whole replay, warm-up included;
    requests arriving before ``measured_from_s`` are the warm-up's.
    """

    models: tuple[str, ...]
    sources: tuple[str, ...]
    arrival: FloatArray
    model: IntArray
    prompt: IntArray
    output: IntArray
    duration_s: float
    history: tuple[RateSeries, ...]
    replay_start_s: float
    time_scale: float
    measured_from_s: float = 0.0
    mean_rate_rps: float = 0.0  # the total mean rate of the measured requests (requests per simulated second)
    kind: TraceKind = "rates"

    @property
    def requests(self) -> int:
        return len(self.arrival)


def build_workload(spec: WorkloadSpec) -> Workload:
    """The workload ``spec`` describes (deterministic for ``spec.seed``)."""
    rng = np.random.default_rng(spec.seed)
    kind = trace_kind(spec.trace, spec.reader)
    refuse_options(kind, spec.given())
    fmt = detect_format(spec.trace) if spec.reader.format == "auto" else spec.reader.format
    few = fmt == "servegen" and _servegen_models(spec.trace) < spec.model_count
    trace = read_trace(spec.trace, replace(spec.reader, per_client=spec.reader.per_client or few))
    if not trace:
        raise InvalidFieldError("trace", "a trace with at least one model", str(spec.trace))
    if isinstance(trace[0], RequestSeries):
        requests = [s for s in trace if isinstance(s, RequestSeries)]
        return _from_requests(requests, spec, rng, own_models=kind == "models")
    return _from_rates([s for s in trace if isinstance(s, RateSeries)], spec, rng)


def trace_kind(trace: Path, reader: ReaderOptions) -> TraceKind:
    """Which kind of trace ``trace`` is, from its path and header alone (cheap: before any reading)."""
    if not trace.exists():
        raise InvalidFieldError("trace", "an existing trace file or folder", str(trace))
    fmt = detect_format(trace) if reader.format == "auto" else reader.format
    if fmt in ("servegen", "rates"):
        return "rates"
    return "requests" if model_column(trace, reader) is None else "models"


def refuse_options(kind: TraceKind, given: Mapping[str, object]) -> None:
    """Raise :class:`InvalidFieldError` on the first option in ``given`` (set by the user) that
    :data:`REFUSED` says makes no sense for ``kind``."""
    for option in REFUSED[kind]:
        if option in given:
            raise InvalidFieldError(option, f"no --{option} with {_WHY[kind]}", given[option])


def _servegen_models(path: Path) -> int:
    """How many models a ServeGen path holds (its folders of client files), without reading them."""
    files = [path] if path.is_file() else list(path.rglob("chunk-*-trace.csv"))
    return len({f.parent for f in files})


def popularity(models: int, alpha: float) -> FloatArray:
    """Shares ``(i+1)^-alpha``, normalised to sum to 1."""
    weights = np.arange(1, models + 1, dtype=float) ** -alpha
    return np.asarray(weights / weights.sum(), dtype=float)


def _replay_windows(series: RateSeries, spec: WorkloadSpec) -> tuple[int, int, int]:
    """The replay's first window, its count of windows, and how many of them are warm-up."""
    start = (DEFAULT_RATE_DAY if spec.day is None else spec.day) * SECONDS_PER_DAY + spec.offset_s
    lead = math.ceil(spec.warmup_s * spec.time_scale / series.window_sec)
    first = int((start - series.start_sec) // series.window_sec) - lead
    count = lead + math.ceil(spec.duration_s * spec.time_scale / series.window_sec)
    if first < 0 or first + count > len(series.rate_rps):
        span = len(series.rate_rps) * series.window_sec / SECONDS_PER_DAY
        raise InvalidFieldError(
            "day/offset/warmup", f"a replay (warm-up included) inside the trace's {span:g} days", spec.day
        )
    return first, count, lead


def _from_rates(series: list[RateSeries], spec: WorkloadSpec, rng: np.random.Generator) -> Workload:
    first, count, lead = _replay_windows(series[0], spec)
    measured = slice(first + lead, first + count)
    volume = [float(np.nansum(s.rate_rps[measured])) for s in series]
    ranked = [s for v, s in sorted(zip(volume, series, strict=True), key=lambda p: -p[0]) if v > 0]
    if len(ranked) < spec.model_count:
        raise InvalidFieldError(
            "models", f"at most {len(ranked)} (sources with load in the replay)", spec.model_count
        )
    chosen = ranked[: spec.model_count]
    shares = popularity(spec.model_count, spec.popularity_alpha) * spec.rate_rps
    names = tuple(f"model-{i:02d}" for i in range(spec.model_count))
    history = []
    for name, source, share in zip(names, chosen, shares, strict=True):
        replay_mean = float(np.nanmean(source.rate_rps[measured]))
        scale = share * spec.rate_multiplier / replay_mean
        history.append(replace(source, model=name, rate_rps=source.rate_rps * scale))
    times, models = [], []
    warmup = lead * series[0].window_sec / spec.time_scale
    for index, s in enumerate(history):
        until = warmup + spec.duration_s
        t = window_arrivals(s, first, count, spec.time_scale, spec.cv_clip, until, rng, WindowStart.PHASE)
        times.append(t)
        models.append(np.full(len(t), index, dtype=np.int64))
    arrival = np.concatenate(times)
    if arrival.size == 0:
        raise InvalidFieldError("trace", "a replay window with requests (this one has none)", str(spec.trace))
    order = np.argsort(arrival, kind="stable")
    prompt, output = _lengths(spec, len(arrival), rng)
    start = series[0].start_sec + first * series[0].window_sec
    return Workload(
        names,
        tuple(s.model for s in chosen),
        arrival[order],
        np.concatenate(models)[order],
        prompt,
        output,
        warmup + spec.duration_s,
        tuple(history),
        start,
        spec.time_scale,
        warmup,
        spec.rate_rps * spec.rate_multiplier,
    )


def _lengths(spec: WorkloadSpec, n: int, rng: np.random.Generator) -> tuple[IntArray, IntArray]:
    """Prompt and output lengths: pairs sampled from ``spec.lengths``, or the defaults."""
    if spec.lengths is None:
        return np.full(n, DEFAULT_LENGTHS[0], dtype=np.int64), np.full(n, DEFAULT_LENGTHS[1], dtype=np.int64)
    pool = [s for s in read_trace(spec.lengths) if isinstance(s, RequestSeries)]
    inputs = np.concatenate([s.input_tokens for s in pool]) if pool else np.zeros(0)
    outputs = np.concatenate([s.output_tokens for s in pool]) if pool else np.zeros(0)
    usable = np.isfinite(inputs) & np.isfinite(outputs)
    if not usable.any():
        raise InvalidFieldError(
            "lengths", "a per-request trace with input and output token counts", str(spec.lengths)
        )
    pick = rng.integers(0, int(usable.sum()), size=n)
    return _clip(inputs[usable][pick], spec.max_input_tokens), _clip(
        outputs[usable][pick], spec.max_output_tokens
    )


def _clip(values: FloatArray, most: int) -> IntArray:
    return np.asarray(np.clip(np.round(values), 1, most), dtype=np.int64)


def _from_requests(
    series: list[RequestSeries], spec: WorkloadSpec, rng: np.random.Generator, own_models: bool
) -> Workload:
    """The log's arrivals; with ``own_models`` each keeps its model (only the models with a request in the
    replay are kept), else each is assigned one of ``spec.model_count`` synthetic models. The whole log,
    binned per model (:func:`_request_history`), is the rate history the forecasts and the sizing read."""
    # One order for all four columns: sorting the arrivals alone would hand one request's token counts (or
    # model) to another whenever the trace's models are read one after the other.
    arrival = np.concatenate([s.arrival_sec for s in series])
    order = np.argsort(arrival, kind="stable")
    arrival = arrival[order]
    inputs = np.concatenate([s.input_tokens for s in series])[order]
    outputs = np.concatenate([s.output_tokens for s in series])[order]
    source = np.concatenate([np.full(len(s.arrival_sec), i, dtype=np.int64) for i, s in enumerate(series)])
    source = source[order]
    if arrival.size == 0:
        raise InvalidFieldError("trace", "a trace with at least one request", str(spec.trace))
    scale = spec.time_scale * spec.rate_multiplier
    start = arrival[0] + (spec.day or 0) * SECONDS_PER_DAY + spec.offset_s  # days from the first request
    replayed = (arrival - start) / scale + spec.warmup_s
    span = _replayed_span(replayed, spec)
    usable = np.isfinite(inputs) & np.isfinite(outputs)
    keep = (replayed >= 0) & (replayed < spec.warmup_s + span) & usable
    if not keep.any():
        raise InvalidFieldError("offset/duration", "a span of the trace holding requests", spec.offset_s)
    if own_models:
        present = np.unique(source[keep])
        names = tuple(series[i].model for i in present)
        sources = tuple(f"{spec.trace.name} model {name}" for name in names)
        model = np.searchsorted(present, source)  # past the end for a model absent from the replay
        model[~np.isin(source, present)] = len(names)
    else:
        shares = popularity(spec.model_count, spec.popularity_alpha)
        model = rng.choice(spec.model_count, size=len(arrival), p=shares)  # the whole log's, history too
        names = tuple(f"model-{i:02d}" for i in range(spec.model_count))
        sources = tuple(f"{spec.trace.name} share {i}" for i in range(spec.model_count))
    since = arrival - (start - spec.warmup_s * scale)  # trace seconds from the replay's start (its clock's 0)
    history = _request_history(since[usable], model[usable], names, (spec.warmup_s + span) * scale)
    return Workload(
        names,
        sources,
        np.asarray(replayed[keep], dtype=float),
        np.asarray(model[keep], dtype=np.int64),
        _clip(inputs[keep], spec.max_input_tokens),
        _clip(outputs[keep], spec.max_output_tokens),
        spec.warmup_s + span,
        history,
        0.0,
        scale,
        spec.warmup_s,
        float(np.count_nonzero(replayed[keep] >= spec.warmup_s)) / span,
        "models" if own_models else "requests",
    )


def _request_history(
    since: FloatArray, model: IntArray, names: tuple[str, ...], replay_end: float
) -> tuple[RateSeries, ...]:
    """Each model's arrivals (trace seconds from the replay's start, negative before it) binned into
    :data:`HISTORY_WINDOW_SEC` windows by the one binning ``warmserve local`` uses
    (:func:`~warmserve.operator.forecast.traces.binned`), every model on one grid from the log's first
    request to ``replay_end``: the days before the replay are the forecaster's history and the windows after
    its start the oracle's knowledge, as for a rate trace. The grid has a bound at the replay's start (0, so
    whole windows count exactly), so no history window holds a replayed request."""
    window = HISTORY_WINDOW_SEC
    # The 1e-9 keeps a log whose first request lies a whole number of windows before the replay (an
    # --offset in whole windows) from gaining an empty window before it by a rounding error.
    grid = -math.ceil(max(0.0, -float(since[0])) / window - 1e-9) * window
    windows = math.ceil(replay_end / window - grid / window)
    history = []
    for index, name in enumerate(names):
        times = np.maximum(since[model == index], grid)  # that rounding error's request: in window 0
        none = np.full(len(times), np.nan)
        history.append(binned(RequestSeries(name, times, none, none, none), window, grid, windows))
    return tuple(history)


def _replayed_span(arrival: FloatArray, spec: WorkloadSpec) -> float:
    """The measured seconds a per-request replay really covers: ``--duration``, or less when the trace ends
    sooner (a one-hour log under the default day). The rate reported, the baselines' sizing and the progress
    bar all divide by this span, so it must be the replay's, not the option's. A log is taken to end one
    mean gap between requests after its last one, and spans at least one second (one request, or all
    of them at one instant)."""
    gap = (arrival[-1] - arrival[0]) / (len(arrival) - 1) if len(arrival) > 1 else 1.0
    return min(spec.duration_s, max(1.0, float(arrival[-1] - spec.warmup_s + gap)))
