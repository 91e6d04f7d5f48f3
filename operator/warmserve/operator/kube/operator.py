"""``warmserve operator``: the kopf handlers and the scheduler loop, in one event loop (docs/operator.md).

kopf watches the namespace's ``WorkerPool`` and ``ModelDeployment`` resources and keeps the
:class:`~warmserve.operator.kube.registry.Registry` (hence the scheduler's models), the worker Pods and every
status current; beside it :func:`~warmserve.operator.scheduler.run` ticks the scheduler over
:class:`~warmserve.operator.kube.cluster.KubeCluster`. Both run only while this process holds the
namespace's Lease (:class:`~warmserve.operator.kube.lease.LeaseElector`): a second operator waits as a
standby and takes over when the first is gone. The probes and the metrics are served throughout
(:mod:`warmserve.operator.kube.probes`). SIGTERM or SIGINT stops a standby, or kopf (it handles them) and
then the loop, and the Lease is released; a loop that fails stops kopf and its error is raised; a lost
Lease stops both at once and raises :class:`~warmserve.protocol.errors.UnavailableError`. After each tick
the loop counts it in :class:`~warmserve.operator.kube.metrics.OperatorMetrics`, queues its decisions as
Events for the :class:`~warmserve.operator.kube.events.EventWriter`'s own task and wakes the task that
writes the ModelDeployment statuses the tick changed (docs/operator.md, "Events", "Metrics", "Status
cadence").

Forecasts: :class:`~warmserve.operator.online_forecast.OnlineForecast` learns each model's demand from the
scheduler's observations; beside the loop, :class:`~warmserve.operator.kube.forecasting.HistoryKeeper`
restores and saves its history and runs its fits (docs/operator.md, Forecasts).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import aiohttp
import kopf
import kubernetes.client

from warmserve.operator.decisions import decision_records
from warmserve.operator.health import Pulse
from warmserve.operator.kube.cluster import KubeCluster
from warmserve.operator.kube.events import EventWriter
from warmserve.operator.kube.forecasting import HistoryKeeper
from warmserve.operator.kube.handlers import Handlers
from warmserve.operator.kube.lease import LeaseElector
from warmserve.operator.kube.metrics import OperatorMetrics
from warmserve.operator.kube.persistence import ProgressAnnotations
from warmserve.operator.kube.probes import serve_probes
from warmserve.operator.kube.registry import ColdStarts, Recorded, Registry
from warmserve.operator.leadership import Timing
from warmserve.operator.online_forecast import OnlineForecast
from warmserve.operator.policies.registry import NAMES, SIZED, PolicyEntry, policy_by_name
from warmserve.operator.scheduler import Scheduler, Tick, run
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.kube_api import kube_api_client
from warmserve.protocol.resource_names import GROUP

log = logging.getLogger(__name__)

#: Policies the operator can run: those a live cluster can play (no oracle, no static sized layout).
OPERATOR_POLICIES: tuple[str, ...] = tuple(n for n in NAMES if n not in SIZED and n != "oracle")
DEFAULT_POLICY = "warmserve"
#: The finalizer holding a deleted ModelDeployment until its replicas are released.
FINALIZER = f"{GROUP}/release"


@dataclass(frozen=True, slots=True)
class OperatorOptions:
    """What ``warmserve operator`` is asked: the namespace it manages, the scheduler's tick, the policy,
    the status interval, the Lease that elects the one active operator and its duration, and where the
    probes are served."""

    namespace: str
    tick_s: float = 1.0
    policy: str = DEFAULT_POLICY
    status_interval_s: float = 2.0
    lease_name: str = "warmserve-operator"
    lease_duration_s: int = 15
    health_host: str = "0.0.0.0"
    health_port: int = 8081


def operator_policy(name: str) -> PolicyEntry:
    """The policy called ``name``; one the operator cannot run raises :class:`InvalidFieldError` listing
    those it can."""
    entry = policy_by_name(name) if name in OPERATOR_POLICIES else None
    if entry is None or entry.policy is None:
        raise InvalidFieldError("policy", f"one of {list(OPERATOR_POLICIES)}", name)
    return entry


def settings(diffbase: kopf.DiffBaseStorage) -> kopf.OperatorSettings:
    """kopf's settings: our finalizer and annotation prefix (its progress, written while a handler is
    retried: :class:`ProgressAnnotations`), ``diffbase`` for its last-handled state (the handlers'
    :class:`~warmserve.operator.kube.persistence.MemoryDiffBase`), no CRD scanning, standalone (the Lease,
    not kopf's peering, decides which operator runs)."""
    s = kopf.OperatorSettings()
    s.persistence.finalizer = FINALIZER
    s.persistence.progress_storage = ProgressAnnotations(prefix=f"operator.{GROUP}")
    s.persistence.diffbase_storage = diffbase
    s.scanning.disabled = True  # one namespace, the kinds known: no cluster-wide permission on CRDs needed
    s.peering.standalone = True
    s.posting.level = logging.WARNING  # Events for failures, not for every handler that succeeds
    return s


async def operate(options: OperatorOptions) -> None:
    """Serve the probes, wait to hold the Lease, then run the handlers and the scheduler loop until a signal
    stops kopf (or the loop fails, or the Lease is lost: :meth:`LeaseElector.lead`)."""
    entry = operator_policy(options.policy)
    timing = Timing(options.lease_duration_s)
    pulse = Pulse(time.monotonic(), timing.retry_s, timing.duration_s, options.tick_s)
    stop = asyncio.Event()  # kopf's stop flag too: a signal before kopf takes them over is not lost
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    metrics = OperatorMetrics()
    with kube_api_client() as api:
        elector = LeaseElector(api, options.namespace, options.lease_name, timing, pulse)
        async with serve_probes(options.health_host, options.health_port, pulse, metrics.registry):
            await elector.lead(lambda: _run(api, options, entry, pulse, metrics, stop), stop)


async def _run(
    api: kubernetes.client.ApiClient,
    options: OperatorOptions,
    entry: PolicyEntry,
    pulse: Pulse,
    metrics: OperatorMetrics,
    stop: asyncio.Event,
) -> None:
    """The handlers, the scheduler loop, the Event writer and the forecast history keeper, until a signal
    stops kopf (or sets ``stop``) or the loop, the keeper or the status writer fails."""
    assert entry.policy is not None  # checked by operator_policy
    cold_starts = ColdStarts()
    step = cold_starts.recording(entry.policy)
    forecasts = OnlineForecast()
    scheduler = Scheduler({}, step, entry.initial_state, forecasts, entry.scores)
    registry = Registry(scheduler)
    async with (
        aiohttp.ClientSession() as session,
        KubeCluster(api, session, options.namespace) as kube,
    ):
        cluster = Recorded(kube)
        handlers = Handlers(
            api, registry, cold_starts, cluster, _version(), options.status_interval_s, metrics
        )
        kopf.on.login(registry=handlers.kopf)(_login)
        await asyncio.to_thread(handlers.prime, options.namespace)  # the lease is renewed meanwhile
        events = EventWriter(api, options.namespace, registry.reference, metrics)
        report = reporting(scheduler, metrics, events)

        statuses_due = asyncio.Event()

        def ticked(tick: Tick) -> None:
            pulse.last_tick = time.monotonic()  # what the liveness probe reads: the loop ticks
            report(tick)
            statuses_due.set()

        pulse.last_tick = time.monotonic()  # the first tick is due now
        loop = asyncio.create_task(run(cluster, scheduler, options.tick_s, ticked))
        keeper = asyncio.create_task(
            HistoryKeeper(api, session, registry, forecasts, metrics).run(options.tick_s)
        )
        writer = asyncio.create_task(events.run())
        statuses = asyncio.create_task(_write_statuses(handlers, statuses_due))
        for task in (loop, keeper, statuses):
            task.add_done_callback(lambda _: stop.set())
        ready = asyncio.Event()
        serving = asyncio.create_task(_serving(ready, pulse))
        handling = asyncio.create_task(
            kopf.operator(
                registry=handlers.kopf,
                settings=settings(handlers.diffbase),
                standalone=True,
                namespaces=[options.namespace],
                stop_flag=stop,
                ready_flag=ready,
            )
        )
        try:
            await asyncio.wait({handling})
        finally:  # cancelled (the Lease lost): the scheduler stops at once, kopf then winds down
            for task in (loop, keeper, writer, statuses, serving, handling):
                task.cancel()
            await asyncio.gather(loop, keeper, writer, statuses, serving, handling, return_exceptions=True)
        handling.result()
    for task, what in (
        (loop, "the scheduler loop"),
        (keeper, "the forecast history keeper"),
        (statuses, "the status writer"),
    ):
        if not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"{what} stopped") from task.exception()


def reporting(scheduler: Scheduler, metrics: OperatorMetrics, events: EventWriter) -> Callable[[Tick], None]:
    """What the loop does after each tick: count it, and queue its decisions' Events (never blocks)."""

    def report(tick: Tick) -> None:
        metrics.count_tick(tick)
        if tick.decision is not None and tick.decision.plan and scheduler.snapshot is not None:
            events.submit(decision_records(scheduler.snapshot, tick.decision.plan))

    return report


async def _write_statuses(handlers: Handlers, due: asyncio.Event) -> None:
    """After each tick (``due`` set), write the ModelDeployment statuses its snapshot changed
    (:meth:`Handlers.write_statuses`); ticks that come while a round is writing make one more round."""
    while True:
        await due.wait()
        due.clear()
        await handlers.write_statuses()


async def _serving(ready: asyncio.Event, pulse: Pulse) -> None:
    """Mark the leader ready once kopf has started (the resources listed and the Pod caches synced
    before)."""
    await ready.wait()
    pulse.serving = True


def _login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's credentials from the same configuration every component uses (``KUBECONFIG`` first, then
    in-cluster: :func:`kube_api_client`)."""
    with kube_api_client() as client:
        config = client.configuration
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )


def _version() -> str:
    """The tag of the default worker image: the installed version."""
    try:
        return version("warmserve")
    except PackageNotFoundError:
        return "latest"
