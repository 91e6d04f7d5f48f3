"""``warmserve forecast``: backtest every forecaster on a trace, print its errors per model and overall, and
forecast each model's next window with the forecaster that did best on it.

With no ``--trace`` it runs on the shipped sample (three ServeGen language models, 14 days at 600 s; see
``warmserve/operator/data/README.md``). Any user error — a missing or malformed trace, a window the trace's
resolution does not allow, an unknown forecaster — is reported in one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
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
from warmserve.operator.forecast.outlook import Outlook, outlooks
from warmserve.operator.forecast.quantile import QUANTILE
from warmserve.operator.forecast.traces import ReaderOptions, TimestampUnit, TraceFormat, read_trace
from warmserve.protocol.command import bounded, output_file
from warmserve.protocol.errors import InvalidInputError

SAMPLE = "servegen_language_600s.csv"
_DEFAULT_LATENCY = LatencyModel()


def register(subparsers: Any) -> None:
    """Add the ``forecast`` subcommand."""
    parser = subparsers.add_parser(
        "forecast",
        help="backtest load forecasters on a trace",
        description="Backtest every forecaster (train on the first part of the trace, whose last third is "
        "validation, rolling one window ahead over the rest) and print MAPE and MASE of the window mean and "
        "peak concurrency, and the pinball loss and calibration of the peak's upper bound.",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        help="ServeGen folder, rate-series CSV, request CSV or JSONL (default: the shipped ServeGen sample)",
    )
    add_reader_arguments(parser)
    latency = parser.add_argument_group("latency model (turns arrivals into concurrency)")
    for option, help_text in (
        ("prefill-sec-per-token", "seconds of prefill per input token"),
        ("decode-sec-per-token", "seconds per output token"),
        ("mean-input-tokens", "input tokens of a request whose trace row has none"),
        ("mean-output-tokens", "output tokens of a request whose trace row has none"),
    ):
        default = getattr(_DEFAULT_LATENCY, option.replace("-", "_"))
        latency.add_argument(f"--{option}", type=bounded(float, 0), default=default, help=help_text)
    parser.add_argument(
        "--window",
        type=bounded(float, 0, strict=True),
        metavar="S",
        help="window in seconds (default: 300, or the trace's resolution if coarser)",
    )
    parser.add_argument(
        "--train-fraction",
        type=bounded(float, 0, 1, strict=True),
        default=0.5,
        help="share of windows used only to train",
    )
    parser.add_argument(
        "--forecasters",
        type=_forecaster_names,
        default=",".join(FORECASTERS),
        help=f"comma-separated, any of {', '.join(FORECASTERS)}",
    )
    parser.add_argument("--json", type=output_file, metavar="OUT", help="also write the results as JSON")
    parser.set_defaults(func=run)


def add_reader_arguments(parser: argparse.ArgumentParser) -> None:
    """The reader options group (format, ServeGen clients, column names, timestamp unit), shared by every
    command that reads a trace so that each option has one spelling and one meaning. A column option left
    out is ``None`` (detect), so a command can tell which options the user set."""
    reader = parser.add_argument_group("reader options (override what the path implies)")
    reader.add_argument(
        "--format", choices=get_args(TraceFormat), default="auto", help="trace format (auto: from the path)"
    )
    reader.add_argument("--per-client", action="store_true", help="ServeGen: treat each client as a model")
    for field in ("timestamp", "model", "input", "output", "duration"):
        reader.add_argument(f"--{field}-column", metavar="NAME", help=f"column holding the {field}")
    reader.add_argument(
        "--timestamp-unit",
        choices=get_args(TimestampUnit),
        default="auto",
        help="unit of numeric timestamps (auto: from their magnitude)",
    )


def reader_options(args: argparse.Namespace) -> ReaderOptions:
    """The :class:`ReaderOptions` the group of :func:`add_reader_arguments` parsed."""
    return ReaderOptions(
        format=args.format,
        per_client=args.per_client,
        timestamp_column=args.timestamp_column,
        model_column=args.model_column,
        input_column=args.input_column,
        output_column=args.output_column,
        duration_column=args.duration_column,
        timestamp_unit=args.timestamp_unit,
    )


def _forecaster_names(text: str) -> list[str]:
    """An argparse ``type``: known forecaster names, checked before the trace is read."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FORECASTERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected names among {', '.join(FORECASTERS)}, got {text!r}")
    return names


def run(args: argparse.Namespace) -> int:
    """Run the backtest. Bad input raises an ``InvalidInputError``, which the ``warmserve`` entry point prints
    in one line."""
    options = reader_options(args)
    latency = LatencyModel(
        args.prefill_sec_per_token, args.decode_sec_per_token, args.mean_input_tokens, args.mean_output_tokens
    )
    with resources.as_file(resources.files("warmserve.operator") / "data" / SAMPLE) as sample:
        trace = read_trace(args.trace or sample, options)
    window = args.window if args.window is not None else default_window_sec(trace)
    loads = load_series(trace, window, LatencyModels(latency))
    result = backtest(loads, args.forecasters, args.train_fraction)
    ahead = outlooks(loads, result)
    print(format_table(result, window))
    print()
    print(format_outlook(ahead))
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(to_json(result, window, ahead), indent=2) + "\n")
        except OSError as exc:
            raise InvalidInputError(f"cannot write {args.json}: {exc.strerror}") from exc
    return 0


def format_table(result: BacktestResult, window_sec: float) -> str:
    """One table per model (with ``auto``'s pick and its forecasters that ran as their fallback), the models
    left out and why, then the overall table (mean over the models backtested)."""
    blocks = [
        _table(
            f"{model}: {result.train_windows[model]} training windows of {window_sec:g} s "
            f"(the last {result.validation_windows[model]} to validate)",
            scores,
        )
        + (f"\n  auto chose {result.chosen[model]} (validation peak loss)" if model in result.chosen else "")
        + "".join(f"\n  {name} fell back: {why}" for name, why in result.fallbacks[model].items())
        for model, scores in result.models.items()
    ]
    if result.skipped:
        blocks.append(
            "not backtested:\n" + "\n".join(f"  {model}: {why}" for model, why in result.skipped.items())
        )
    blocks.append(_table(f"overall (mean over {len(result.models)} models)", result.overall))
    return "\n\n".join(blocks)


def format_outlook(ahead: Sequence[Outlook]) -> str:
    """The next window's forecast per model: concurrency (requests in flight), mean and peak."""
    width = max(len(o.model) for o in ahead) + 2
    lines = [
        "next window (concurrency, requests in flight)",
        f"{'model':<{width}}{'starts at (s)':>15}  {'forecaster':<20}{'mean':>9}{'peak':>9}"
        f"{f'peak q{QUANTILE * 100:g}':>10}  why",
    ]
    for o in ahead:
        lines.append(
            f"{o.model:<{width}}{o.start_sec:>15.0f}  {o.forecaster:<20}{o.mean:>9.2f}{o.peak:>9.2f}"
            f"{o.peak_bound:>10.2f}  {o.why}"
        )
    return "\n".join(lines)


def _table(title: str, scores: Mapping[str, Scores]) -> str:
    width = max(len(name) for name in scores) + 2
    lines = [
        title,
        f"{'forecaster':<{width}}{'mean MAPE%':>12}{'peak MAPE%':>12}{'mean MASE':>11}{'peak MASE':>11}"
        f"{'peak > fc %':>13}{f'peak q{QUANTILE * 100:g} loss':>17}{'bound factor':>14}"
        f"{'peak > bound %':>16}",
    ]
    for name, s in scores.items():
        lines.append(
            f"{name:<{width}}{s.mean_mape:>12.1f}{s.peak_mape:>12.1f}{s.mean_mase:>11.3f}{s.peak_mase:>11.3f}"
            f"{s.peak_exceeded:>13.1f}{s.peak_loss:>17.3f}{s.peak_factor:>14.2f}{s.bound_exceeded:>16.1f}"
        )
    return "\n".join(lines)


def to_json(result: BacktestResult, window_sec: float, ahead: Sequence[Outlook]) -> dict[str, Any]:
    """``forecasters.<name>`` overall and ``models.<model>.<name>`` (an undefined metric is ``null``),
    ``skipped.<model>`` and ``fallbacks.<model>.<name>`` (reasons), ``auto_chose.<model>``,
    ``next_window.<model>``."""
    return {
        "window_sec": window_sec,
        "quantile": QUANTILE,
        "train_windows": dict(result.train_windows),
        "validation_windows": dict(result.validation_windows),
        "auto_chose": dict(result.chosen),
        "skipped": dict(result.skipped),
        "fallbacks": {model: dict(names) for model, names in result.fallbacks.items()},
        "next_window": {o.model: {k: v for k, v in asdict(o).items() if k != "model"} for o in ahead},
        "forecasters": {name: _scores_json(s) for name, s in result.overall.items()},
        "models": {
            model: {name: _scores_json(s) for name, s in scores.items()}
            for model, scores in result.models.items()
        },
    }


def _scores_json(scores: Scores) -> dict[str, float | None]:
    return {key: value if math.isfinite(value) else None for key, value in asdict(scores).items()}
