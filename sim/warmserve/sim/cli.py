"""``warmserve simulate``: every chosen policy on the same trace, cluster and seed, side by side.

Prints a table per policy, and optionally writes the figures as JSON (keys in docs/simulator.md) and a
plot. With only ``--trace`` given for the ServeGen language folder, the defaults are the benchmark's
floor scenario: 8 models, 2 nodes x 8 H100, a 24 h replay of day 8. A per-request log with a model column
keeps its own models, sized by ``--model-sizes`` or by their names (:mod:`warmserve.sim.sizes`); the reader
options are ``warmserve forecast``'s. ``--sweep`` adds each policy's highest rate at >= 99 % SLO attainment
(``max_rate_rps_at_slo``), ``--sweep-gpus`` the fewest GPUs at which it attains 99 %. Bad options raise
errors naming the option and what it accepts; an option the trace's kind does not take is refused
(:func:`warmserve.sim.workload.refuse_options`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from tqdm import tqdm

from warmserve.operator.forecast.cli import add_reader_arguments, reader_options
from warmserve.operator.forecast.forecasters import FORECASTERS
from warmserve.operator.policies.registry import NAMES
from warmserve.protocol.command import bounded, output_file
from warmserve.protocol.errors import InvalidInputError
from warmserve.replay.forecasts import history_notes
from warmserve.sim.catalog import DEFAULT_SHAPES, ClusterSpec
from warmserve.sim.results import model_table, per_model, summarize, sweep_table, table
from warmserve.sim.scenario import (
    DEFAULT_POLICIES,
    SLO_TARGET,
    Scenario,
    check_policies,
    gpus_at_slo,
    max_rate_at_slo,
    model_sizes,
    prepare,
    run_policy,
)
from warmserve.sim.simulator import RunResult, SimConfig
from warmserve.sim.workload import WorkloadSpec
from warmserve.worker.timing import GPU_PROFILES, MODEL_SHAPES


def plot_file(text: str) -> Path:
    """An argparse ``type`` for ``--plot``: a writable file whose suffix names a format matplotlib writes."""
    from matplotlib.backend_bases import FigureCanvasBase  # only when a plot is asked for

    path = output_file(text)
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise argparse.ArgumentTypeError(
            f"{text}: expected a file name ending in one of {', '.join('.' + f for f in sorted(formats))}"
        )
    return path


def forecaster_name(text: str) -> str:
    """An argparse ``type`` for ``--forecaster``: a registered forecaster's name."""
    if text not in FORECASTERS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(FORECASTERS)}, got {text!r}")
    return text


def gpu_counts(text: str) -> list[int]:
    """An argparse ``type`` for ``--sweep-gpus``: comma-separated positive GPU counts."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated GPU counts such as 8,16,24, got {text!r}")
    return [int(part) for part in parts]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("simulate", help="replay a trace against policies in the simulator")
    add = parser.add_argument
    add(
        "--trace",
        type=Path,
        required=True,
        help="a trace file or folder (ServeGen, rate CSV, Azure, Mooncake, a request log with models)",
    )
    add_reader_arguments(parser)
    add(
        "--policies",
        default=",".join(DEFAULT_POLICIES),
        help=f"comma-separated, any of {', '.join(NAMES)}",
    )
    add(
        "--forecaster",
        type=forecaster_name,
        default="warmserve",
        help=f"the forecaster of the online policies (warmserve), one of {', '.join(FORECASTERS)}",
    )
    add(
        "--models",
        type=bounded(int, 1),
        help="number of models the trace is split into (default 8; a log with a model column keeps its own)",
    )
    add("--alpha", type=bounded(float, 0), help="power-law popularity exponent (default 1)")
    add(
        "--model-sizes",
        type=Path,
        metavar="FILE",
        help="YAML or CSV: each of the log's models' weight, tp and kv_bytes_per_token (default: by name)",
    )
    add(
        "--rate",
        type=bounded(float, 0, strict=True),
        help="total mean request rate (requests/s) over the replay of a rate trace (default 4; a per-request "
        "trace keeps its own rate)",
    )
    add(
        "--rate-multiplier",
        type=bounded(float, 0, strict=True),
        default=1.0,
        help="multiply every rate (load sweeps); a per-request trace is replayed that much faster",
    )
    add(
        "--day",
        type=bounded(int, 0),
        help="day of the trace to replay, 0-based from its first day (a rate trace: default 7, earlier days "
        "are history) or its first request (a per-request trace: default 0)",
    )
    add("--offset", type=bounded(float, 0), default=0.0, help="seconds into the day where the replay starts")
    add(
        "--duration",
        type=bounded(float, 0, strict=True),
        default=86400.0,
        help="replay length in simulated seconds",
    )
    add(
        "--warmup",
        type=bounded(float, 0),
        default=0.0,
        help="simulated seconds replayed before --offset and left out of the figures",
    )
    add(
        "--time-scale",
        type=bounded(float, 0, strict=True),
        default=1.0,
        help="trace seconds per simulated second",
    )
    add("--lengths", type=Path, help="a per-request trace to sample token lengths from")
    add(
        "--max-cv",
        type=bounded(float, 0, strict=True),
        help="clip on a rate trace's inter-arrival CV (default 4)",
    )
    add("--nodes", type=bounded(int, 1), default=2, help="workers (nodes) in the simulated cluster")
    add("--gpus", type=bounded(int, 1), default=8, help="GPUs per node")
    add("--gpu-profile", default="h100", help=f"GPU model, one of {', '.join(GPU_PROFILES)}")
    add(
        "--shapes",
        help=f"synthetic models' shapes (name or name:tp), cycled (default {','.join(DEFAULT_SHAPES)}); "
        f"names: {', '.join(MODEL_SHAPES)}",
    )
    add("--max-concurrency", type=bounded(int, 1), default=16, help="B, requests in flight per instance")
    add("--slo-ttft", type=bounded(float, 0, strict=True), default=2.0, help="TTFT SLO in seconds")
    add("--seed", type=bounded(int, 0), default=0, help="workload sampling seed")
    add("--sweep", action="store_true", help="also find each policy's max rate at >= 99%% SLO")
    add(
        "--sweep-gpus",
        type=gpu_counts,
        metavar="COUNTS",
        help="also run each policy on clusters of these total GPU counts (multiples of --gpus) and report "
        "the fewest at >= 99%% SLO",
    )
    add("--json", type=output_file, help="write the figures here")
    add("--plot", type=plot_file, help="write the plot here (.png, .svg, .pdf, ...)")
    add("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def scenario_from(args: argparse.Namespace) -> Scenario:
    workload = WorkloadSpec(
        trace=args.trace,
        models=args.models,
        alpha=args.alpha,
        mean_rate_rps=args.rate,
        rate_multiplier=args.rate_multiplier,
        day=args.day,
        offset_s=args.offset,
        duration_s=args.duration,
        warmup_s=args.warmup,
        time_scale=args.time_scale,
        lengths=args.lengths,
        max_cv=args.max_cv,
        seed=args.seed,
        reader=reader_options(args),
    )
    cluster = ClusterSpec(nodes=args.nodes, gpus_per_node=args.gpus, profile=args.gpu_profile)
    shapes = tuple(s.strip() for s in args.shapes.split(",") if s.strip()) if args.shapes else None
    sim = SimConfig(forecaster=args.forecaster)
    return Scenario(workload, cluster, shapes, args.max_concurrency, args.slo_ttft, sim, args.model_sizes)


def run(args: argparse.Namespace) -> int:
    policies = check_policies([p.strip() for p in args.policies.split(",") if p.strip()])
    scenario = scenario_from(args)
    workload, models = prepare(scenario)
    logging.getLogger("warmserve.operator.scheduler").setLevel(logging.ERROR)
    runs: dict[str, RunResult] = {}
    figures: dict[str, dict[str, Any]] = {}
    models_figures: dict[str, dict[str, dict[str, Any]]] = {}
    for name in policies:
        with tqdm(
            total=round(workload.duration_s), desc=name, unit="s", disable=args.no_progress or None
        ) as bar:

            def advance(now: float, bar: tqdm[Any] = bar) -> None:
                bar.update(round(now) - bar.n)

            runs[name] = run_policy(scenario, workload, models, name, advance)
        figures[name] = summarize(runs[name])
        models_figures[name] = per_model(runs[name])
    if args.sweep:
        for name in policies:
            figures[name]["max_rate_rps_at_slo"] = max_rate_at_slo(scenario, name)
    sweep: dict[str, Any] = {}
    if args.sweep_gpus:
        for name in policies:
            smallest, shares = gpus_at_slo(scenario, workload, models, name, args.sweep_gpus, SLO_TARGET)
            sweep[name] = {"fewest_gpus": smallest, "slo_attainment": shares}
    sizes = model_sizes(scenario, workload)
    size_notes = {m: size.guess or "from --model-sizes" for m, size in sizes.items()}
    print(table(figures))
    print()
    print(model_table(models_figures, size_notes))
    if sweep:
        print()
        attained = {name: s["slo_attainment"] for name, s in sweep.items()}
        print(sweep_table(attained, {name: s["fewest_gpus"] for name, s in sweep.items()}, SLO_TARGET))
    notes = history_notes(workload.history, workload.replay_start_s, workload.models)
    for model, why in notes.items():
        print(f"{model}: {why}")
    if args.sweep:
        print(
            "max rate at 99% SLO (requests/s): "
            + ", ".join(f"{n} {f['max_rate_rps_at_slo']:.3g}" for n, f in figures.items())
        )
    try:
        if args.json:
            document = {
                "requests": workload.requests,
                "models": list(workload.models),
                "policies": figures,
                "forecast_notes": notes,
                "per_model": models_figures,
                "model_sizes": {
                    m: {
                        "weight_bytes": size.weight_bytes,
                        "tensor_parallel": size.tensor_parallel,
                        "kv_bytes_per_token": size.kv_bytes_per_token,
                        "guessed": size.guess or None,
                    }
                    for m, size in sizes.items()
                },
                "sweep_gpus": {"slo_target": SLO_TARGET, "policies": sweep} if sweep else None,
            }
            args.json.write_text(json.dumps(document, indent=2, sort_keys=True))
        if args.plot:
            from warmserve.sim.plot import plot

            plot(runs, args.plot)
    except OSError as exc:
        raise InvalidInputError(f"cannot write {exc.filename}: {exc.strerror}") from None
    return 0
