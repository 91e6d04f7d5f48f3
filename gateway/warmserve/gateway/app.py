"""The gateway's HTTP server: the OpenAI-compatible front door, ``/demand`` and ``/metrics``.

A thin adapter around the router (which instance, or wait) and the proxy (forward, retry, stream).
Requests are validated once by :func:`warmserve.protocol.openai_api.parse_request`: a malformed one is
answered ``400`` naming the field, a model that is not declared ``404`` (``model_not_found``), both in
OpenAI's error format, before any instance is involved. Client disconnects cancel the handler
(``handler_cancellation``), which closes the upstream connection so the worker cancels too.

Start it with :func:`run` (the CLI does), or build :class:`Gateway` and run ``gateway.app()`` on an
``aiohttp`` runner with ``handler_cancellation=True``. The client session (one pooled connector), the
discovery loop and, with ``discover_namespace``, the watch of the worker Pods live exactly as long as the
application.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

import aiohttp
import kubernetes.client
from aiohttp import web

from warmserve.gateway.config import DeclaredModel, GatewayConfig, check_worker_urls
from warmserve.gateway.discovery import Discovery
from warmserve.gateway.metrics import GatewayMetrics
from warmserve.gateway.model_deployments import follow_model_deployments
from warmserve.gateway.proxy import Call, Proxy
from warmserve.gateway.router import Router
from warmserve.gateway.worker_pods import follow_worker_pods
from warmserve.protocol.demand_report import demand_body
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.kube_api import kube_api_client
from warmserve.protocol.openai_api import Kind, error_body, models_body, parse_request
from warmserve.protocol.request_body import BodyTimeoutError, check_content_type, read_body

log = logging.getLogger(__name__)

#: Seconds to open a connection to a worker; beyond it the attempt fails and is retried elsewhere.
CONNECT_TIMEOUT_S = 2.0
#: Request bodies above this are refused by aiohttp with 413 before they are buffered.
MAX_BODY_BYTES = 8 * 1024 * 1024


class Gateway:
    """One gateway: its configuration, routing state and metrics; ``app()`` serves them over HTTP.

    With ``config.discover_namespace`` the workers are that namespace's worker Pods, read with ``kube_api``
    (default: :func:`~warmserve.protocol.kube_api.kube_api_client`, which raises
    :class:`InvalidInputError` here, at once, when there is no cluster configuration)."""

    def __init__(self, config: GatewayConfig, kube_api: kubernetes.client.ApiClient | None = None) -> None:
        self.config = config
        self._kube_api = kube_api
        if config.discover_namespace is not None and kube_api is None:
            self._kube_api = kube_api_client()
        self.router = Router(config.models, config.queue_limit)
        self.metrics = GatewayMetrics(self.router.demand)
        self._workers: tuple[str, ...] = config.workers
        self._discovery: Discovery | None = None
        self._proxy: Proxy | None = None

    @property
    def workers(self) -> tuple[str, ...]:
        """The workers polled for instances now (static, set, or the worker Pods found)."""
        return self._discovery.workers if self._discovery is not None else self._workers

    def set_workers(self, workers: Sequence[str]) -> None:
        """Replace the workers polled for instances (the local runner or scheduler calls this).

        Call it on the gateway's event loop (from another thread: ``loop.call_soon_threadsafe``). Raises
        :class:`InvalidFieldError` for a bad URL, keeping the previous list.
        """
        if self._discovery is not None:
            self._discovery.set_workers(workers)
        else:
            self._workers = check_worker_urls(workers)

    def set_models(self, models: Sequence[DeclaredModel]) -> None:
        """Serve exactly ``models`` from now on (discovery calls this as ModelDeployments change); call it
        on the gateway's event loop. See :meth:`Router.set_models` for what happens to a dropped model."""
        self.router.set_models(models)

    def app(self) -> web.Application:
        """The aiohttp application; its session and discovery start and stop with it."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/demand", self._demand)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.cleanup_ctx.append(self._lifetime)
        return app

    async def _lifetime(self, _: web.Application) -> AsyncIterator[None]:
        """The session and discovery for the application's life; with discovery on, the worker Pods too."""
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._discovering())
            if self.config.discover_namespace is not None:
                assert self._kube_api is not None  # made in __init__
                namespace, selector = self.config.discover_namespace, self.config.worker_selector
                pods = follow_worker_pods(self._kube_api, namespace, selector, self.set_workers)
                await stack.enter_async_context(pods)
                models = follow_model_deployments(self._kube_api, namespace, self.set_models)
                await stack.enter_async_context(models)
            yield

    @contextlib.asynccontextmanager
    async def _discovering(self) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=self.config.upstream_read_timeout_s
        )
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        # A proxy keeps no cookies: skipping the jar saves work on every response.
        jar = aiohttp.DummyCookieJar()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, cookie_jar=jar) as session:
            self._proxy = Proxy(session, self.router, self.metrics, self.config.retry_after_s)
            self._discovery = Discovery(
                session, self._workers, self.router.update, self.config.poll_interval_s
            )
            poller = asyncio.create_task(self._discovery.run(), name="gateway-discovery")
            try:
                yield
            finally:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
                self._workers = self._discovery.workers
                self._discovery = self._proxy = None

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completion")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def _generate(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        arrived = time.perf_counter()
        try:
            check_content_type(request.headers.get("Content-Type"))
            body = await read_body(request.read(), self.config.body_timeout_s)
            parsed = parse_request(body, kind)
        except BodyTimeoutError as exc:  # closed: the rest of the stalled body may still come
            timed_out = web.json_response(error_body(str(exc), param="body", code="body_timeout"), status=408)
            timed_out.force_close()
            return timed_out
        except InvalidFieldError as exc:
            return web.json_response(error_body(str(exc), param=exc.field), status=400)
        if parsed.model not in self.router.models:
            message = f"The model {parsed.model!r} does not exist; see /v1/models"
            return web.json_response(error_body(message, param="model", code="model_not_found"), status=404)
        assert self._proxy is not None, "the application is running"
        self.router.arrive(parsed.model)
        deadline = asyncio.get_running_loop().time() + self.config.hold_timeout_s
        call = Call(parsed, body, request.path, arrived, deadline)
        response = await self._proxy.forward(request, call)
        self.metrics.requests.labels(parsed.model, str(response.status)).inc()
        self.metrics.duration.labels(parsed.model).observe(time.perf_counter() - arrived)
        return response

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response(models_body(list(self.router.models)))

    async def _demand(self, _: web.Request) -> web.Response:
        return web.json_response(demand_body(self.router.demand()))

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")


def run(gateway: Gateway, host: str, port: int) -> None:
    """Serve ``gateway`` on ``host:port`` until SIGINT or SIGTERM, then shut down gracefully.

    Blocks (it owns the event loop); an address that cannot be bound raises :class:`OSError`.
    """
    models = [m.name for m in gateway.config.models]
    log.info("starting the gateway on http://%s:%d for %s", host, port, models)
    web.run_app(gateway.app(), host=host, port=port, handler_cancellation=True, access_log=None, print=None)
