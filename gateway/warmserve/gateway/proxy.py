"""Forwarding one generation request to an instance: retries before the first byte, pass-through after.

An attempt that fails before anything reached the client (the connection failed, the worker answered
``404``/``5xx``, or a stream ended before its first event) is retried on another instance of the model,
at most :data:`MAX_ATTEMPTS` times in all; when no other instance is free the request waits in the
model's queue again, until its one deadline. A replica that refused it while switching (demoted, then
promoted again) is a new instance once it serves again (:mod:`.routing`), so the request can go there.
Once a streamed byte was sent to the client the request is never retried: an upstream failure then ends
the stream with an error event and no ``[DONE]``, as the worker does (docs/worker-api.md), so nothing
is ever sent twice.

Client cancellation reaches the worker: when the client goes away the handler is cancelled (or its write
fails), and the upstream response is closed, not returned to the pool, so the worker sees its
connection close and cancels the generation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from warmserve.gateway.admission import HoldExpired, QueueFull
from warmserve.gateway.instances import Instance
from warmserve.gateway.metrics import GatewayMetrics
from warmserve.gateway.router import Exclude, ModelDropped, Router
from warmserve.protocol.openai_api import REPLICA_HEADER, GenerationRequest, error_body, sse

#: Instances one request is tried on before it is answered 503 (the first try included).
MAX_ATTEMPTS = 3
#: Worker answers that mean "nothing was generated, try another instance" (docs/worker-api.md).
RETRYABLE_STATUSES = frozenset({404, 500, 502, 503, 504})
#: The header that names the replica a worker must use (docs/worker-api.md).
_EVENT_END = b"\n\n"
#: A worker's stream that goes this long without ending an event is broken (bounds the gateway's buffer).
MAX_EVENT_BYTES = 1 << 20


class _Retry(Exception):
    """This attempt failed before anything was sent to the client."""


@dataclass(frozen=True, slots=True)
class Call:
    """One client request on its way: what it asks, its raw body, where it goes, when it came."""

    request: GenerationRequest
    body: bytes
    path: str
    arrived: float  # time.perf_counter() at arrival
    deadline: float  # in the event loop's clock


class Proxy:
    """Sends calls to instances chosen by the router, over one pooled client session."""

    def __init__(
        self, session: aiohttp.ClientSession, router: Router, metrics: GatewayMetrics, retry_after_s: int
    ) -> None:
        self._session = session
        self._router = router
        self._metrics = metrics
        self._retry_after_s = retry_after_s

    async def forward(self, client: web.Request, call: Call) -> web.StreamResponse:
        """Answer ``client`` with the response of the first instance that does not fail."""
        model = call.request.model
        exclude: Exclude = frozenset()
        for attempt in range(MAX_ATTEMPTS):
            try:
                instance = await self._router.acquire(model, exclude, call.deadline)
            except QueueFull:
                return self.unavailable("too many requests are waiting for this model", "queue_full")
            except ModelDropped as exc:
                return self.unavailable(str(exc), "model_removed")
            except HoldExpired:
                return self.unavailable("no instance of this model became free in time", "no_capacity")
            try:
                return await self._attempt(client, call, instance)
            except _Retry:
                exclude |= {instance.incarnation}
                if attempt + 1 < MAX_ATTEMPTS:
                    self._metrics.retries.labels(model).inc()
            finally:
                self._router.release(instance)
        return self.unavailable(f"{MAX_ATTEMPTS} instances failed this request", "upstream_failed")

    def unavailable(self, message: str, code: str) -> web.Response:
        """``503`` in OpenAI's error format, with ``Retry-After``."""
        return web.json_response(
            error_body(message, kind="server_error", code=code),
            status=503,
            headers={"Retry-After": str(self._retry_after_s)},
        )

    async def _attempt(self, client: web.Request, call: Call, instance: Instance) -> web.StreamResponse:
        headers = {REPLICA_HEADER: instance.replica, "Content-Type": "application/json"}
        url = f"{instance.endpoint}{call.path}"
        try:
            upstream = await self._session.post(url, data=call.body, headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retry from exc
        try:
            if upstream.status in RETRYABLE_STATUSES:
                await upstream.read()  # so the connection goes back to the pool
                raise _Retry
            if call.request.stream and upstream.status == 200:
                response = await self._stream(client, call, upstream)
            else:
                response = await self._whole(upstream)
        except BaseException:
            upstream.close()  # never reuse a connection in an unknown state; tells the worker to stop
            raise
        upstream.release()
        return response

    async def _whole(self, upstream: aiohttp.ClientResponse) -> web.Response:
        try:
            payload = await upstream.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retry from exc
        return web.Response(body=payload, status=upstream.status, content_type=upstream.content_type)

    async def _stream(
        self, client: web.Request, call: Call, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        """Pass whole server-sent events through; the client response starts with the first one."""
        events = _EventSplitter()
        try:
            while not (first := events.feed(await upstream.content.readany())):
                if upstream.content.at_eof():
                    raise _Retry
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retry from exc
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        meter = _StreamMeter(call.arrived)
        try:
            await out.prepare(client)
            await self._pass_through(out, upstream, events, first, meter)
            await out.write_eof()
        except ConnectionResetError:
            upstream.close()  # the client went away: cancel the generation upstream
        finally:
            meter.record(self._metrics, call.request.model)
        return out

    @staticmethod
    async def _pass_through(
        out: web.StreamResponse,
        upstream: aiohttp.ClientResponse,
        events: _EventSplitter,
        first: bytes,
        meter: _StreamMeter,
    ) -> None:
        """Write the stream's events as they come; an upstream failure ends it with an error event."""
        await out.write(first)
        meter.sent(first)
        try:
            async for chunk in upstream.content.iter_any():
                if whole := events.feed(chunk):
                    await out.write(whole)
                    meter.sent(whole)
        except (aiohttp.ClientError, TimeoutError):
            failure = error_body("the worker failed mid-stream", kind="server_error", code="upstream_failed")
            await out.write(sse(failure))


class _EventSplitter:
    """Cuts a byte stream at event boundaries so a partial event is never forwarded."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The whole events completed by ``chunk`` (possibly none: ``b""``).

        Raises :class:`aiohttp.ClientPayloadError` when an unfinished event outgrows
        :data:`MAX_EVENT_BYTES`, so a broken worker is handled like a dropped connection.
        """
        data = self._pending + chunk
        end = data.rfind(_EVENT_END) + len(_EVENT_END)
        if end < len(_EVENT_END):
            if len(data) > MAX_EVENT_BYTES:
                raise aiohttp.ClientPayloadError(f"an event longer than {MAX_EVENT_BYTES} bytes")
            self._pending = data
            return b""
        self._pending = data[end:]
        return data[:end]


class _StreamMeter:
    """TTFT and TPOT of one stream as the gateway sees them (events coalesced in one read share a time)."""

    def __init__(self, arrived: float) -> None:
        self._arrived = arrived
        self._first = 0.0
        self._last = 0.0
        self._events = 0

    def sent(self, events: bytes) -> None:
        now = time.perf_counter()
        if not self._events:
            self._first = now
        self._last = now
        self._events += events.count(b"data: ") - events.count(b"data: [DONE]")

    def record(self, metrics: GatewayMetrics, model: str) -> None:
        if self._events:
            metrics.ttft.labels(model).observe(self._first - self._arrived)
        if self._events > 1:
            metrics.tpot.labels(model).observe((self._last - self._first) / (self._events - 1))
