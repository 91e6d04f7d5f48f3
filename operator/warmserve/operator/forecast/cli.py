"""``warmserve forecast``: backtest every forecaster on a trace and print its errors per model and overall.

With no ``--trace`` it runs on the shipped sample (three ServeGen language models, 14 days at 600 s; see
``warmserve/operator/data/README.md``). Any user error — a missing or malformed trace, a window the trace's
resolution does not allow, an unknown forecaster — is reported in one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, get_args

from warmserve.operator.forecast.backtest import BacktestResult, Scores, backtest
from warmserve.operator.forecast.concurrency import (
    LatencyModel,
    LatencyModels,
    default_window_sec,
    load_series,
)
from warmserve.operator.forecast.forecasters import FORECASTERS
from warmserve.operator.forecast.traces import ReaderOptions, TimestampUnit, TraceFormat, read_trace
from warmserve.protocol.errors import InvalidInputError

SAMPLE = "servegen_language_600s.csv"
_DEFAULT_LATENCY = LatencyModel()


def register(subparsers: Any) -> None:
    """Add the ``forecast`` subcommand."""
    parser = subparsers.add_parser(
        "forecast",
        help="backtest load forecasters on a trace",
        description="Backtest every forecaster (train on the first part of the trace, rolling one window "
        "ahead over the rest) and print MAPE and MASE of the window mean and peak concurrency.",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        help="ServeGen folder, rate-series CSV, request CSV or JSONL (default: the shipped ServeGen sample)",
    )
    reader = parser.add_argument_group("reader options (override what the path implies)")
    reader.add_argument("--format", choices=get_args(TraceFormat), default="auto")
    reader.add_argument("--per-client", action="store_true", help="ServeGen: treat each client as a model")
    for field in ("timestamp", "model", "input", "output", "duration"):
        reader.add_argument(f"--{field}-column", metavar="NAME", help=f"column holding the {field}")
    reader.add_argument("--timestamp-unit", choices=get_args(TimestampUnit), default="auto")
    latency = parser.add_argument_group("latency model (turns arrivals into concurrency)")
    latency.add_argument(
        "--prefill-sec-per-token", type=float, default=_DEFAULT_LATENCY.prefill_sec_per_token
    )
    latency.add_argument("--decode-sec-per-token", type=float, default=_DEFAULT_LATENCY.decode_sec_per_token)
    latency.add_argument("--mean-input-tokens", type=float, default=_DEFAULT_LATENCY.mean_input_tokens)
    latency.add_argument("--mean-output-tokens", type=float, default=_DEFAULT_LATENCY.mean_output_tokens)
    parser.add_argument(
        "--window",
        type=float,
        metavar="S",
        help="window in seconds (default: 300, or the trace's resolution if coarser)",
    )
    parser.add_argument(
        "--train-fraction", type=float, default=0.5, help="share of windows used only to train"
    )
    parser.add_argument("--forecasters", default=",".join(FORECASTERS), help="comma-separated names")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the backtest. Bad input raises an ``InvalidInputError``, which the ``warmserve`` entry point prints
    in one line."""
    options = ReaderOptions(
        format=args.format,
        per_client=args.per_client,
        timestamp_column=args.timestamp_column,
        model_column=args.model_column,
        input_column=args.input_column,
        output_column=args.output_column,
        duration_column=args.duration_column,
        timestamp_unit=args.timestamp_unit,
    )
    latency = LatencyModel(
        args.prefill_sec_per_token, args.decode_sec_per_token, args.mean_input_tokens, args.mean_output_tokens
    )
    with resources.as_file(resources.files("warmserve.operator") / "data" / SAMPLE) as sample:
        trace = read_trace(args.trace or sample, options)
    window = args.window if args.window is not None else default_window_sec(trace)
    loads = load_series(trace, window, LatencyModels(latency))
    names = [name.strip() for name in args.forecasters.split(",") if name.strip()]
    result = backtest(loads, names, args.train_fraction)
    print(format_table(result, window))
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(to_json(result, window), indent=2) + "\n")
        except OSError as exc:
            raise InvalidInputError(f"cannot write {args.json}: {exc.strerror}") from exc
    return 0


def format_table(result: BacktestResult, window_sec: float) -> str:
    """One table per model, then the overall one (mean over models)."""
    blocks = [
        _table(f"{model}: {result.train_windows[model]} training windows of {window_sec:g} s", scores)
        for model, scores in result.models.items()
    ]
    blocks.append(_table(f"overall (mean over {len(result.models)} models)", result.overall))
    return "\n\n".join(blocks)


def _table(title: str, scores: Mapping[str, Scores]) -> str:
    width = max(len(name) for name in scores) + 2
    lines = [
        title,
        f"{'forecaster':<{width}}{'mean MAPE%':>12}{'peak MAPE%':>12}{'mean MASE':>11}{'peak MASE':>11}",
    ]
    for name, s in scores.items():
        lines.append(
            f"{name:<{width}}{s.mean_mape:>12.1f}{s.peak_mape:>12.1f}{s.mean_mase:>11.3f}{s.peak_mase:>11.3f}"
        )
    return "\n".join(lines)


def to_json(result: BacktestResult, window_sec: float) -> dict[str, Any]:
    """``forecasters.<name>`` overall and ``models.<model>.<name>``; an undefined metric is ``null``."""
    return {
        "window_sec": window_sec,
        "train_windows": dict(result.train_windows),
        "forecasters": {name: _scores_json(s) for name, s in result.overall.items()},
        "models": {
            model: {name: _scores_json(s) for name, s in scores.items()}
            for model, scores in result.models.items()
        },
    }


def _scores_json(scores: Scores) -> dict[str, float | None]:
    return {key: value if math.isfinite(value) else None for key, value in asdict(scores).items()}
