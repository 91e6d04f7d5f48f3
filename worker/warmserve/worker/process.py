"""The universal worker process (``warmserve worker``): config → pools → engine → runtime → HTTP server.

One process per worker Pod (or per local worker). It assembles the parts and runs until SIGTERM or SIGINT:

- the runtime with one pool per GPU and the chosen engine;
- the HTTP server (:mod:`warmserve.worker.server`), whose ``PUT /desired`` is always on;
- at most one more desired-state channel — a file (local runner) or the worker's own Pod annotation
  (``--kube``) — feeding the *same* :class:`~warmserve.worker.desired_feed.DesiredFeed` as the HTTP
  ``PUT``, so that one set of generation rules orders every document;
- an observed-state sink (a file, or the Pod annotation) that gets the runtime's observed state whenever
  it changes, checked every :data:`REPORT_INTERVAL_S`.

Failure behaviour: bad options raise :class:`InvalidFieldError` naming the option before anything is
allocated (the CLI prints one line, exit 2). The process keeps nothing on disk: after a crash a restarted
worker starts with empty pools and reports exactly that (generation -1, no replicas) until a desired state
arrives again (from a desired file or Pod annotation still in place, at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.kube_http import KubeHttp
from warmserve.protocol.state import ObservedState
from warmserve.worker.desired_feed import DesiredFeed
from warmserve.worker.desired_source import FileSource, PodAnnotationSource
from warmserve.worker.engines.base import Engine
from warmserve.worker.observed_sink import FileSink, ObservedSink, PodAnnotationSink
from warmserve.worker.pod_ref import PodRef
from warmserve.worker.runtime import WorkerConfig, WorkerRuntime
from warmserve.worker.server import create_app, desired_feed, report_rejection
from warmserve.worker.timing import Tier, gpu_profile

log = logging.getLogger(__name__)

ENGINES = ("fake", "torch", "vllm")
POOLS = ("fake", "host", "cuda")
#: The pool each engine uses unless told otherwise.
DEFAULT_POOL = {"fake": "fake", "torch": "host", "vllm": "cuda"}
#: How often the observed state is compared with the last one reported, in seconds.
REPORT_INTERVAL_S = 0.1

_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_size(text: str, option: str = "--gpu-memory") -> int:
    """Bytes from ``80GiB``, ``512MiB``, ``4096`` (binary units only: a GPU's memory is counted in GiB)."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise InvalidFieldError(option, "a size such as 80GiB, 512MiB or a number of bytes", text)
    return int(match.group(1)) * _UNITS[unit]


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """Everything ``warmserve worker`` is told; :meth:`check` names the first bad option."""

    name: str
    gpus: int
    gpu_memory_bytes: int
    host: str = "127.0.0.1"
    port: int = 8000
    engine: str = "fake"
    pool: str | None = None  # None: DEFAULT_POOL[engine]
    store: Path | None = None
    gpu_profile: str = "h100"
    tier: Tier = Tier.HOST
    speed: float = 1.0
    threads: int | None = None  # torch's intra-op threads (torch engine); None: the engine's default
    desired_file: Path | None = None
    observed_file: Path | None = None
    kube: bool = False
    kube_api: str | None = None  # the API server's URL; None: in-cluster, else kubeconfig
    endpoint: str | None = None  # the URL others reach this worker at; None: http://host:port
    control_token: str = ""  # what a PUT /desired must send as its bearer token; empty: no check

    @property
    def pool_backend(self) -> str:
        return self.pool if self.pool is not None else DEFAULT_POOL.get(self.engine, "fake")

    @property
    def advertised(self) -> str:
        return self.endpoint or f"http://{self.host}:{self.port}"

    def check(self) -> None:
        if self.engine not in ENGINES:
            raise InvalidFieldError("--engine", f"one of {list(ENGINES)}", self.engine)
        if self.pool_backend not in POOLS:
            raise InvalidFieldError("--pool", f"one of {list(POOLS)}", self.pool_backend)
        if self.engine == "torch" and self.pool_backend == "fake":
            raise InvalidFieldError(
                "--pool", "host or cuda for the torch engine (it needs real memory)", "fake"
            )
        if self.pool_backend != "fake" and (self.store is None or not self.store.is_dir()):
            raise InvalidFieldError(
                "--store", f"an existing model store directory for the {self.pool_backend} pool", self.store
            )
        if not 0 <= self.port < 65536:
            raise InvalidFieldError("--port", "a TCP port (0-65535)", self.port)
        if self.threads is not None and self.threads < 1:
            raise InvalidFieldError("--threads", "an integer >= 1", self.threads)
        if self.speed < 0:
            raise InvalidFieldError("--speed", "a delay multiplier >= 0", self.speed)
        if self.kube and (self.desired_file or self.observed_file):
            raise InvalidFieldError(
                "--kube", "either --kube or --desired-file/--observed-file, not both", True
            )
        for option, path in (("--desired-file", self.desired_file), ("--observed-file", self.observed_file)):
            if path is not None and not path.parent.is_dir():
                raise InvalidFieldError(option, "a file in an existing directory", str(path))
        gpu_profile(self.gpu_profile, "--gpu-profile")

    def config(self) -> WorkerConfig:
        return WorkerConfig(
            name=self.name,
            gpus=self.gpus,
            gpu_memory_bytes=self.gpu_memory_bytes,
            pool_backend=self.pool_backend,
            store_root=self.store,
            endpoint=self.advertised,
        )


def default_name() -> str:
    """``$POD_NAME`` (the downward API) if set, else this machine's hostname."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def build_engine(options: WorkerOptions) -> Engine:
    """The engine named by ``--engine``; engines with heavy imports are imported only when chosen."""
    if options.engine == "torch":
        from warmserve.worker.engines.torch_engine import TorchEngine

        return TorchEngine(options.threads)
    if options.engine == "vllm":
        from warmserve.worker.engines.vllm_engine import VllmEngine

        return VllmEngine()
    from warmserve.worker.engines.fake import FakeEngine

    return FakeEngine(gpu_profile(options.gpu_profile, "--gpu-profile"), options.speed, options.tier)


def build_runtime(options: WorkerOptions) -> WorkerRuntime:
    """Check the options, then allocate the pools and the engine."""
    options.check()
    config = options.config()
    config.check()
    return WorkerRuntime(config, build_engine(options))


@contextlib.asynccontextmanager
async def channels(
    options: WorkerOptions, runtime: WorkerRuntime
) -> AsyncIterator[tuple[DesiredFeed, ObservedSink | None]]:
    """The desired-state feed (shared with ``PUT /desired``) and the observed sink the options name.

    With ``--kube`` both follow the worker's own Pod, named by ``POD_NAMESPACE``/``POD_NAME``; a missing
    variable or API configuration raises naming it. The channels stop when the block exits.
    """
    on_reject, check = report_rejection(runtime), runtime.check_desired
    if options.kube:
        pod = PodRef.from_env()
        with KubeHttp.from_config(options.kube_api) as api:
            source = PodAnnotationSource(api, pod, worker=options.name, on_reject=on_reject, check=check)
            async with source, PodAnnotationSink(api, pod) as pod_sink:
                yield source.feed, pod_sink
        return
    sink = FileSink(options.observed_file) if options.observed_file is not None else None
    if options.desired_file is None:
        yield desired_feed(runtime), sink
        return
    async with FileSource(
        options.desired_file, options.name, on_reject=on_reject, check=check
    ) as file_source:
        yield file_source.feed, sink


async def report_changes(runtime: WorkerRuntime, sink: ObservedSink) -> None:
    """Runs until cancelled: hand the sink the observed state each time it differs from the last one."""
    last: ObservedState | None = None
    while True:
        state = runtime.observed()
        if state != last:
            sink.report(state)
            last = state
        await asyncio.sleep(REPORT_INTERVAL_S)


async def serve(options: WorkerOptions, stop: asyncio.Event) -> None:
    """Run the worker until ``stop`` is set; then stop taking requests, drop every replica and return.

    Raises :class:`InvalidFieldError` for bad options, and ``OSError`` if the port cannot be bound.
    """
    runtime = build_runtime(options)
    async with channels(options, runtime) as (feed, sink):
        app = create_app(
            runtime, feed, control_token=options.control_token, open_without_token=not options.kube
        )
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, options.host, options.port).start()
            log.warning(
                "worker %s serving at %s (engine %s)", options.name, options.advertised, options.engine
            )
            reporter = asyncio.create_task(report_changes(runtime, sink)) if sink is not None else None
            await stop.wait()
            if reporter is not None:
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)
        finally:
            await runner.cleanup()  # closes the runtime: loads cancelled, slots released, pools closed


def run(options: WorkerOptions) -> int:
    """Serve until SIGTERM or SIGINT (Kubernetes stops a Pod with SIGTERM); exit code 0 on a clean stop."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(options, stop)

    asyncio.run(main())
    return 0
