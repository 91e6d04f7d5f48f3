"""The operator's small HTTP server: ``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics``
(docs/operator.md, "Probes").

A thin adapter: the rules are :mod:`warmserve.operator.health`'s, over the :class:`Pulse` the operator
and its lease elector keep current; ``/metrics`` renders the registry it is given, to which it adds the
gauge ``warmserve_operator_leader``. Each answer is ``200`` or ``503`` with one line: the role
(``leader``/``standby``) or why not.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from warmserve.operator.health import Pulse, role, stuck, unready
from warmserve.protocol.errors import UnavailableError

LEADER_GAUGE = "warmserve_operator_leader"


@asynccontextmanager
async def serve_probes(
    host: str, port: int, pulse: Pulse, registry: CollectorRegistry
) -> AsyncIterator[None]:
    """Serve the probes and the metrics on ``host:port`` inside the block. A port that cannot be bound
    raises :class:`UnavailableError` naming ``--health-port``."""
    Gauge(
        LEADER_GAUGE,
        "1 while this operator holds the Lease and runs the handlers and the scheduler, else 0",
        registry=registry,
    ).set_function(lambda: float(pulse.leading))
    app = web.Application()
    app.router.add_get("/healthz", _verdict(pulse, stuck))
    app.router.add_get("/readyz", _verdict(pulse, unready))
    app.router.add_get("/metrics", _metrics(registry))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise UnavailableError(f"--health-port: cannot listen on {host}:{port}: {exc.strerror}") from exc
    try:
        yield
    finally:
        await runner.cleanup()


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _verdict(pulse: Pulse, rule: Callable[[Pulse, float], str | None]) -> Handler:
    async def answer(_: web.Request) -> web.Response:
        why = rule(pulse, time.monotonic())
        return web.Response(status=503 if why else 200, text=f"{why or 'ok'} ({role(pulse)})\n")

    return answer


def _metrics(registry: CollectorRegistry) -> Handler:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return answer
