"""Trace readers: turn a workload trace file or folder into plain per-model series.

Two kinds of trace exist and each reader returns one of two immutable shapes:

* **rate traces** (:class:`RateSeries`): a request rate per fixed window, with the burstiness (``cv`` of
  inter-arrival times) of that window. ServeGen per-client folders and WarmServe's own "rate series" CSV
  (``t_sec,model,rate_rps,cv``) are rate traces.
* **request traces** (:class:`RequestSeries`): one row per request (arrival time, token counts, optionally a
  measured duration). Azure LLM CSVs and Mooncake JSONL files are request traces; column names are
  configurable through :class:`ReaderOptions`.

:func:`read_trace` detects the format from the path; any option the user sets overrides the detection.
A malformed file raises :class:`TraceFormatError` naming the file, the line and the column; a trace that
cannot be interpreted (an empty folder, an unknown column) raises ``InvalidFieldError``. Readers never
drop or repair bad rows silently. A window missing from a rate trace is kept as NaN ("no data"), which the
forecasters treat as a gap.

The two shapes live in :mod:`warmserve.operator.forecast.series`, so the operator, which only uses them,
does not load pandas with the readers.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from warmserve.operator.forecast.series import FloatArray as FloatArray  # re-exported: the readers' shapes
from warmserve.operator.forecast.series import RateSeries as RateSeries
from warmserve.operator.forecast.series import RequestSeries as RequestSeries
from warmserve.operator.forecast.series import Trace as Trace
from warmserve.protocol.errors import InvalidFieldError, InvalidInputError

TraceFormat = Literal["auto", "servegen", "rates", "csv", "jsonl"]
TimestampUnit = Literal["auto", "s", "ms", "us", "ns", "datetime"]

#: Column-name candidates per field, matched case-insensitively; the first present one is used.
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "timestamp": ("timestamp", "time", "arrival_time", "t_sec"),
    "model": ("model", "model_name", "model_id"),
    "input": ("input_tokens", "input_length", "contexttokens", "prompt_tokens"),
    "output": ("output_tokens", "output_length", "generatedtokens", "completion_tokens"),
    "duration": ("duration", "duration_sec", "latency", "latency_sec"),
}
_UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_SERVEGEN_FILE = re.compile(r"chunk-(\d+)-trace\.csv$")
_SERVEGEN_COLUMNS = ("t_sec", "rate", "cv")


class TraceFormatError(InvalidInputError):
    """A trace file holds a value its format does not allow; names the file, line (1-based) and column."""

    def __init__(self, path: Path, line: int, column: str, problem: str) -> None:
        self.path = path
        self.line = line
        self.column = column
        super().__init__(f"{path}:{line}: column {column}: {problem}")


@dataclass(frozen=True)
class ReaderOptions:
    """How to read a trace. ``None`` fields mean "detect" (format from the path, columns from
    :data:`DEFAULT_COLUMNS`). A column named here must exist; a defaulted optional column may be absent.

    ``timestamp_unit`` applies to numeric timestamps; ``auto`` means milliseconds for JSONL (Mooncake's
    convention) and seconds for CSV, and parses non-numeric timestamps as dates (seconds since the epoch).
    ``per_client`` treats each ServeGen client as its own model (``<model>:client-<N>``).
    """

    format: TraceFormat = "auto"
    per_client: bool = False
    timestamp_column: str | None = None
    model_column: str | None = None
    input_column: str | None = None
    output_column: str | None = None
    duration_column: str | None = None
    timestamp_unit: TimestampUnit = "auto"


def read_trace(path: Path, options: ReaderOptions = ReaderOptions()) -> Trace:
    """Read any supported trace; the format comes from ``options.format`` or else :func:`detect_format`."""
    if not path.exists():
        raise InvalidFieldError("trace", "an existing file or folder", str(path))
    fmt = detect_format(path) if options.format == "auto" else options.format
    if fmt == "servegen":
        return read_servegen(path, per_client=options.per_client)
    if fmt == "rates":
        return read_rate_csv(path)
    return read_requests(path, options, jsonl=fmt == "jsonl")


def detect_format(path: Path) -> TraceFormat:
    """A folder or a ``chunk-N-trace.csv`` is ServeGen, ``.jsonl``/``.json`` is JSONL, a CSV whose header
    has ``rate_rps`` is a rate series, any other CSV is a per-request trace."""
    if path.is_dir() or _SERVEGEN_FILE.search(path.name):
        return "servegen"
    if path.suffix.lower() in (".jsonl", ".json"):
        return "jsonl"
    with path.open(newline="") as handle:
        header = next(csv.reader(handle), [])
    return "rates" if "rate_rps" in [name.strip().lower() for name in header] else "csv"


# --- rate traces ------------------------------------------------------------------------------------


def aggregate_cv(rates: FloatArray, cvs: FloatArray) -> FloatArray:
    """Burstiness of independent clients summed, per window (clients along axis 0).

    Arrivals of a renewal process in a long interval L have variance ≈ λ·L·cv²; independent clients add
    variances, so the sum behaves like one process with cv² = Σλᵢcvᵢ² / Σλᵢ. Idle windows get cv 0.
    """
    total = rates.sum(axis=0)
    weighted = (rates * cvs**2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv2 = np.where(total > 0, weighted / np.where(total > 0, total, 1.0), 0.0)
    return np.sqrt(cv2)


def read_servegen(path: Path, per_client: bool = False) -> tuple[RateSeries, ...]:
    """Read ServeGen ``chunk-N-trace.csv`` files (no header: ``t_sec,rate,cv,pattern,shape,scale``).

    ``path`` is one file, a model folder of such files, or any folder above (``data/language``); each
    file's parent folder names its model. Clients of a model are summed (rate) and their burstiness combined
    with :func:`aggregate_cv`, unless ``per_client``.

    A window in which *every* client of a model is idle is read as missing data (NaN), not as zero load:
    the release has such windows in runs amid thousands of requests per second (84 in ``m-mid``), which are
    collection gaps, not quiet periods. With ``per_client`` an idle window stays 0.
    """
    files = (
        [path] if path.is_file() else sorted(p for p in path.rglob("*.csv") if _SERVEGEN_FILE.search(p.name))
    )
    if not files:
        raise InvalidFieldError("trace", "a ServeGen folder holding chunk-<N>-trace.csv files", str(path))
    by_model: dict[str, list[tuple[str, pd.DataFrame]]] = defaultdict(list)
    for file in files:
        client = _SERVEGEN_FILE.search(file.name)
        by_model[file.parent.name].append(
            (client.group(1) if client else file.stem, _read_servegen_file(file))
        )
    series: list[RateSeries] = []
    for model, clients in sorted(by_model.items()):
        if per_client:
            series.extend(
                _client_series(f"{model}:client-{cid}", [frame], path, idle_is_gap=False)
                for cid, frame in clients
            )
        else:
            series.append(_client_series(model, [frame for _, frame in clients], path, idle_is_gap=True))
    return tuple(series)


def _read_servegen_file(file: Path) -> pd.DataFrame:
    raw = _read_csv_strings(file, header=None)
    if raw.shape[1] < len(_SERVEGEN_COLUMNS):
        raise TraceFormatError(file, 1, str(raw.shape[1] + 1), "expected t_sec,rate,cv,... (6 fields)")
    frame = pd.DataFrame(
        {
            name: _numeric(raw[index], file, f"{index + 1} ({name})", minimum=0.0)
            for index, name in enumerate(_SERVEGEN_COLUMNS)
        }
    )
    return frame.set_index("t_sec")


def _client_series(model: str, frames: Sequence[pd.DataFrame], source: Path, idle_is_gap: bool) -> RateSeries:
    """Put clients on one regular time grid and combine them into one series.

    A window absent from every client is NaN (no data); one absent from only some clients counts them idle.
    With ``idle_is_gap`` a window whose total rate is 0 is NaN as well.
    """
    times = np.unique(np.concatenate([frame.index.to_numpy() for frame in frames]))
    start, window = _grid(times, source)
    grid = start + window * np.arange(round((times[-1] - start) / window) + 1)
    rates = np.stack([frame["rate"].reindex(grid).to_numpy(dtype=float) for frame in frames])
    cvs = np.stack([frame["cv"].reindex(grid).to_numpy(dtype=float) for frame in frames])
    total = np.nansum(rates, axis=0)
    present = np.isfinite(rates).any(axis=0) & ((total > 0) | (not idle_is_gap))
    total = np.where(present, total, np.nan)
    cv = aggregate_cv(np.nan_to_num(rates), np.nan_to_num(cvs))
    return RateSeries(model, float(start), float(window), _frozen(total), _frozen(cv))


def read_rate_csv(path: Path) -> tuple[RateSeries, ...]:
    """Read WarmServe's rate-series CSV: header ``t_sec,model,rate_rps,cv`` (``model`` and ``cv`` optional).

    ``t_sec`` is the window start in seconds, on a regular grid per model (the grid step is the trace's
    resolution); ``cv`` defaults to 1 (Poisson arrivals) when the column is absent. Without ``model`` the
    whole file is one model named after the file.
    """
    raw = _read_csv_strings(path, header=0)
    columns = {name.strip().lower(): name for name in raw.columns}
    for required in ("t_sec", "rate_rps"):
        if required not in columns:
            raise TraceFormatError(
                path, 1, required, "missing from the header (need t_sec,rate_rps[,model][,cv])"
            )
    t_sec = _numeric(raw[columns["t_sec"]], path, "t_sec")
    rate = _numeric(raw[columns["rate_rps"]], path, "rate_rps", minimum=0.0)
    cv = _numeric(raw[columns["cv"]], path, "cv", minimum=0.0) if "cv" in columns else None
    models = (
        raw[columns["model"]].str.strip() if "model" in columns else pd.Series(path.stem, index=raw.index)
    )
    frame = pd.DataFrame({"t_sec": t_sec, "rate": rate, "cv": 1.0 if cv is None else cv, "model": models})
    series = []
    for model, group in frame.groupby("model", sort=True):
        rows = group.set_index("t_sec")
        if rows.index.has_duplicates:
            row = int(np.flatnonzero(rows.index.duplicated())[0])
            raise TraceFormatError(path, int(group.index[row]), "t_sec", f"repeats a window of {model}")
        series.append(_client_series(str(model), [rows[["rate", "cv"]]], path, idle_is_gap=False))
    return tuple(series)


def write_rate_csv(series: Sequence[RateSeries], path: Path) -> None:
    """Write rate series in the format :func:`read_rate_csv` reads, rates and cvs to 6 significant digits;
    gap (NaN) windows are left out, which reads back as NaN."""
    rows = [
        f"{s.start_sec + s.window_sec * i:.10g},{s.model},{s.rate_rps[i]:.6g},{s.cv[i]:.6g}"
        for s in series
        for i in np.flatnonzero(np.isfinite(s.rate_rps))
    ]
    path.write_text("\n".join(["t_sec,model,rate_rps,cv", *rows]) + "\n")


def binned(
    series: RequestSeries, window_sec: float, start: float | None = None, windows: int | None = None
) -> RateSeries:
    """A per-request series as arrival counts per window, a rate series from ``start`` (at most the first
    arrival; default: the start of the window holding it) over at least ``windows`` windows (default: up to
    the last arrival's), ``cv`` 1 (Poisson: a count per window says nothing of the burstiness within it). The
    models of one trace are binned from one start, so that their windows line up; a window without arrivals
    is a rate of 0 (the log covered it), not a gap. A series without requests and without ``start`` raises
    ``InvalidFieldError`` (with ``start`` it is all zeros: a model the log never asked for in that span)."""
    if start is None:
        if len(series.arrival_sec) == 0:
            raise InvalidFieldError("trace", f"requests for model {series.model}", 0)
        start = math.floor(float(series.arrival_sec[0]) / window_sec) * window_sec
    index = np.floor((series.arrival_sec - start) / window_sec).astype(int)
    last = int(index.max()) + 1 if len(index) else 0
    counts = np.bincount(index, minlength=max(last, windows or 0)).astype(float)
    rates, cv = _frozen(counts / window_sec), _frozen(np.ones(len(counts)))
    return RateSeries(series.model, start, window_sec, rates, cv)


def _grid(times: FloatArray, source: Path) -> tuple[float, float]:
    """Start and step of the regular grid the window starts lie on (the smallest gap between them)."""
    if len(times) < 2:
        raise InvalidFieldError(f"trace {source}", "at least two windows to infer the resolution", len(times))
    window = float(np.min(np.diff(times)))
    off_grid = np.abs((times - times[0]) / window - np.round((times - times[0]) / window)) > 1e-6
    if off_grid.any():
        raise InvalidFieldError(
            f"trace {source}", f"window starts on a regular {window:g} s grid", float(times[off_grid][0])
        )
    return float(times[0]), window


# --- request traces ---------------------------------------------------------------------------------


def read_requests(
    path: Path, options: ReaderOptions = ReaderOptions(), jsonl: bool = False
) -> tuple[RequestSeries, ...]:
    """Read a per-request CSV (with header) or JSONL trace; a trace with no model column is one model
    named after the file. Rows need a timestamp; token counts and durations are optional: a column left out
    or an empty cell reads as NaN ("unknown"; the latency model then uses its mean token counts)."""
    raw = _read_jsonl(path) if jsonl else _read_csv_strings(path, header=0)
    stamp, names = _resolve_columns(raw, path, options)
    arrival = _timestamps(raw[stamp], path, stamp, options.timestamp_unit, jsonl)
    fields = {
        key: (
            _numeric(raw[column], path, column, minimum=0.0, optional=True)
            if column is not None
            else pd.Series(np.nan, index=raw.index)
        )
        for key, column in names.items()
        if key in ("input", "output", "duration")
    }
    model_column = names["model"]
    models = (
        raw[model_column].astype(str).str.strip() if model_column else pd.Series(path.stem, index=raw.index)
    )
    frame = pd.DataFrame({"arrival": arrival, **fields, "model": models})
    if frame.empty:
        raise InvalidFieldError(f"trace {path}", "at least one request", 0)
    return tuple(_request_series(str(model), group) for model, group in frame.groupby("model", sort=True))


def model_column(path: Path, options: ReaderOptions = ReaderOptions()) -> str | None:
    """The column a per-request trace names its models by (``options.model_column``, which must exist, or
    the first default present), or ``None``: one model named after the file. Only the header (a JSONL
    file's first object) is read, so a command can tell a multi-model log from a single-model one before
    the expensive reading; a header without a timestamp column raises as :func:`read_requests` would."""
    fmt = detect_format(path) if options.format == "auto" else options.format
    if fmt == "jsonl":
        with path.open() as handle:
            number, first = next(((n, line) for n, line in enumerate(handle, 1) if line.strip()), (1, "{}"))
        try:
            row = json.loads(first)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(path, number, str(exc.colno), f"invalid JSON ({exc.msg})") from None
        header = list(row) if isinstance(row, dict) else []
    else:
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
    return _resolve_columns(pd.DataFrame(columns=header), path, options)[1]["model"]


def _request_series(model: str, group: pd.DataFrame) -> RequestSeries:
    ordered = group.sort_values("arrival", kind="stable")
    return RequestSeries(
        model,
        _frozen(ordered["arrival"].to_numpy(dtype=float)),
        _frozen(ordered["input"].to_numpy(dtype=float)),
        _frozen(ordered["output"].to_numpy(dtype=float)),
        _frozen(ordered["duration"].to_numpy(dtype=float)),
    )


def _resolve_columns(
    raw: pd.DataFrame, path: Path, options: ReaderOptions
) -> tuple[str, dict[str, str | None]]:
    """The timestamp column, and each optional field's column (``None`` if absent): the user's name (must
    exist) or else the first default present."""
    present = {str(name).strip().lower(): str(name) for name in raw.columns}
    chosen = {
        "timestamp": options.timestamp_column,
        "model": options.model_column,
        "input": options.input_column,
        "output": options.output_column,
        "duration": options.duration_column,
    }
    resolved: dict[str, str | None] = {}
    for field, wanted in chosen.items():
        if wanted is not None:
            if wanted.strip().lower() not in present:
                raise InvalidFieldError(
                    f"{field}_column", f"a column of {path} ({', '.join(present.values())})", wanted
                )
            resolved[field] = present[wanted.strip().lower()]
        else:
            resolved[field] = next((present[c] for c in DEFAULT_COLUMNS[field] if c in present), None)
    stamp = resolved.pop("timestamp")
    if stamp is None:
        raise InvalidFieldError(
            "timestamp_column", f"one of {', '.join(DEFAULT_COLUMNS['timestamp'])} in {path}", None
        )
    return stamp, resolved


def _timestamps(values: pd.Series, path: Path, column: str, unit: TimestampUnit, jsonl: bool) -> pd.Series:
    """Arrival times in seconds: numbers scaled by ``unit``, or dates as seconds since the epoch."""
    numbers = pd.to_numeric(values, errors="coerce")
    as_dates = unit == "datetime" or (unit == "auto" and numbers.isna().all())
    if not as_dates:
        scale = _UNIT_SECONDS["ms" if jsonl else "s"] if unit == "auto" else _UNIT_SECONDS[unit]
        return _numeric(values, path, column) * scale
    dates = pd.to_datetime(values, errors="coerce", format="mixed")
    _raise_first_bad(dates.isna().to_numpy(), values, path, column, "expected a date and time")
    return (dates - pd.Timestamp(0)).dt.total_seconds()


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows: list[dict[str, object]] = []
    lines: list[int] = []
    with path.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceFormatError(
                    path, line_number, str(exc.colno), f"invalid JSON ({exc.msg})"
                ) from None
            if not isinstance(row, dict):
                raise TraceFormatError(path, line_number, "1", "expected a JSON object per line")
            rows.append(row)
            lines.append(line_number)
    return pd.DataFrame(rows, index=pd.Index(lines), dtype=object)


# --- shared parsing helpers -------------------------------------------------------------------------


def _read_csv_strings(path: Path, header: int | None) -> pd.DataFrame:
    """Read every cell as text (so bad values can be located, not coerced); ragged rows are reported.

    The frame's index is each row's line number in the file, which error messages quote.
    """
    try:
        frame = pd.read_csv(path, header=header, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except pd.errors.ParserError:
        raise _ragged_row(path) from None
    except pd.errors.EmptyDataError:
        raise TraceFormatError(path, 1, "1", "the file is empty") from None
    frame.index = pd.RangeIndex(1, len(frame) + 1) if header is None else pd.RangeIndex(2, len(frame) + 2)
    return frame


def _ragged_row(path: Path) -> TraceFormatError:
    """Find the first row whose field count differs from the first row's."""
    with path.open(newline="") as handle:
        rows: Iterable[list[str]] = csv.reader(handle)
        expected = -1
        for line_number, row in enumerate(rows, start=1):
            expected = len(row) if expected < 0 else expected
            if len(row) != expected:
                return TraceFormatError(
                    path, line_number, str(expected + 1), f"expected {expected} fields, got {len(row)}"
                )
    return TraceFormatError(path, 1, "1", "not a readable CSV file")


def _numeric(
    values: pd.Series, path: Path, column: str, minimum: float = -math.inf, optional: bool = False
) -> pd.Series:
    """Parse a column as finite floats ≥ ``minimum``; the first bad cell raises with its line and column.

    With ``optional`` an empty cell (or a JSON field left out or null) is allowed and reads as NaN.
    """
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    blank = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    bad = (~np.isfinite(numbers.to_numpy()) | (numbers.to_numpy() < minimum)) & ~(optional & blank)
    expected = "a finite number" if minimum == -math.inf else f"a finite number ≥ {minimum:g}"
    _raise_first_bad(bad, values, path, column, f"expected {expected}")
    return numbers


def _raise_first_bad(
    bad: npt.NDArray[np.bool_], values: pd.Series, path: Path, column: str, problem: str
) -> None:
    """Raise for the first flagged cell, quoting its line (the series' index) and its text."""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TraceFormatError(path, int(values.index[row]), column, f"{problem}, got {values.iloc[row]!r}")


def _frozen(values: FloatArray) -> FloatArray:
    array = np.array(values, dtype=np.float64)
    array.flags.writeable = False
    return array
