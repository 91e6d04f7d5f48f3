"""The worker's HTTP server (docs/worker-api.md): OpenAI endpoints, state, desired state, metrics.

A thin adapter: bodies are read and typed by :mod:`warmserve.protocol.request_body` (a stalled body is a
408), requests validated by :mod:`warmserve.protocol.openai_api`, routed by the runtime, and generated
by the replica's engine instance; every error is answered in OpenAI's error format. Client
disconnects cancel the handler (``handler_cancellation``), which closes the token stream and so frees the
request's KV space in the engine.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

from aiohttp import web

from warmserve.protocol.errors import InvalidFieldError, UnavailableError
from warmserve.protocol.openai_api import (
    REPLICA_HEADER,
    GenerationRequest,
    Kind,
    chunk_body,
    error_body,
    models_body,
    new_id,
    parse_request,
    render_chat,
    response_body,
    sse,
)
from warmserve.protocol.request_body import BODY_TIMEOUT_S, BodyTimeoutError, check_content_type, read_body
from warmserve.worker.desired_feed import Accept, DesiredFeed, Ignore, Reject, Rejection
from warmserve.worker.engines.base import GenerateRequest, Instance, TokenEvent
from warmserve.worker.runtime import ModelNotServedError, WorkerRuntime

RUNTIME_KEY = web.AppKey("runtime", WorkerRuntime)
FEED_KEY = web.AppKey("feed", DesiredFeed)
FOLLOW_KEY = web.AppKey("follow", asyncio.Task[None])
BODY_TIMEOUT_KEY = web.AppKey("body_timeout_s", float)
TOKEN_KEY = web.AppKey("control_token", str)
OPEN_KEY = web.AppKey("open_without_token", bool)
#: Seconds a client is told to wait before retrying a replica that is not serving yet.
RETRY_AFTER_S = 1


def report_rejection(runtime: WorkerRuntime) -> Callable[[Rejection], None]:
    """A feed's ``on_reject`` that makes the rejection the runtime's reported error."""

    def report(rejection: Rejection) -> None:
        runtime.reject(rejection.message)

    return report


def desired_feed(runtime: WorkerRuntime) -> DesiredFeed:
    """A feed for ``runtime``: its own checks judge documents, rejections become its reported error."""
    return DesiredFeed(runtime.config.name, report_rejection(runtime), runtime.check_desired)


def create_app(
    runtime: WorkerRuntime,
    feed: DesiredFeed | None = None,
    body_timeout_s: float = BODY_TIMEOUT_S,
    control_token: str = "",
    open_without_token: bool = True,
) -> web.Application:
    """The aiohttp application of one worker; the runtime's convergence loop starts with the app.

    ``PUT /desired`` offers documents to ``feed`` — the one a file or Pod channel also feeds, so that one
    set of generation rules orders them all (default: :func:`desired_feed`, HTTP only). While the app
    runs, every state the feed accepts is handed to the runtime. A request body must arrive within
    ``body_timeout_s`` of its headers. With a ``control_token``, ``PUT /desired`` is only for a writer
    that sends it as ``Authorization: Bearer <token>`` (docs/worker-api.md); without one, anyone may
    write if ``open_without_token``, and nobody otherwise (a worker following its Pod's annotation: a
    stray generation over HTTP would otherwise order the operator's annotations out).
    """
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[RUNTIME_KEY] = runtime
    app[BODY_TIMEOUT_KEY] = body_timeout_s
    app[TOKEN_KEY] = control_token
    app[OPEN_KEY] = open_without_token
    app[FEED_KEY] = feed if feed is not None else desired_feed(runtime)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _healthz)
    app.router.add_get("/state", _state)
    app.router.add_put("/desired", _put_desired)
    app.router.add_get("/metrics", _metrics)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app


async def _start(app: web.Application) -> None:
    app[RUNTIME_KEY].start()
    app[FOLLOW_KEY] = asyncio.get_running_loop().create_task(_follow(app[FEED_KEY], app[RUNTIME_KEY]))


async def _follow(feed: DesiredFeed, runtime: WorkerRuntime) -> None:
    """Hand each accepted state to the runtime; runs until the feed ends (or its channel fails)."""
    async for desired in feed:
        runtime.set_desired(desired)


async def _stop(app: web.Application) -> None:
    app[FOLLOW_KEY].cancel()
    await asyncio.gather(app[FOLLOW_KEY], return_exceptions=True)
    await app[RUNTIME_KEY].close()


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return web.json_response(
        error_body(message, param=param, kind=kind, code=code), status=status, headers=headers
    )


def _timed_out(exc: BodyTimeoutError) -> web.Response:
    """408 on a connection then closed: the rest of the stalled body may still come."""
    response = _error(408, str(exc), param="body", code="body_timeout")
    response.force_close()
    return response


async def _body(request: web.Request) -> bytes:
    return await read_body(request.read(), request.app[BODY_TIMEOUT_KEY])


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "completion")


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "chat")


async def _generate(request: web.Request, kind: Kind) -> web.StreamResponse:
    runtime = request.app[RUNTIME_KEY]
    arrived = time.monotonic()
    try:
        check_content_type(request.headers.get("Content-Type"))
        req = parse_request(await _body(request), kind)
        prompt = req.prompt if kind == "completion" else render_chat(req.messages)
        gen = GenerateRequest(
            prompt=prompt,
            max_tokens=req.max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            stop=req.stop,
        )
        instance = runtime.acquire(req.model, request.headers.get(REPLICA_HEADER))
    except BodyTimeoutError as exc:
        return _timed_out(exc)
    except InvalidFieldError as exc:
        return _error(400, str(exc), param=exc.field)
    except ModelNotServedError as exc:
        return _error(404, str(exc), param="model", code="model_not_found")
    except UnavailableError as exc:  # not now (not serving, at its cap B): the client retries
        return _error(503, str(exc), code="replica_unavailable")
    metrics = runtime.metrics
    metrics.inflight.labels(req.model).inc()
    outcome = "error"
    try:
        if req.stream:
            response = await _stream(request, req, instance, gen, arrived, runtime)
        else:
            response = await _whole(req, instance, gen, arrived, runtime)
        outcome = "ok" if response.status == 200 else "error"
        return response
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        metrics.inflight.labels(req.model).dec()
        metrics.requests.labels(req.model, outcome).inc()
        runtime.request_finished()


class _Timer:
    """TTFT and TPOT of one request, recorded in the worker's histograms."""

    def __init__(self, runtime: WorkerRuntime, model: str, arrived: float) -> None:
        self.metrics = runtime.metrics
        self.model = model
        self.arrived = arrived
        self.first = 0.0
        self.last = 0.0
        self.tokens = 0

    def token(self) -> None:
        now = time.monotonic()
        if self.tokens == 0:
            self.first = now
            self.metrics.ttft.labels(self.model).observe(now - self.arrived)
        self.tokens += 1
        self.last = now

    def done(self) -> None:
        if self.tokens > 1:
            self.metrics.tpot.labels(self.model).observe((self.last - self.first) / (self.tokens - 1))


async def _events(instance: Instance, gen: GenerateRequest, timer: _Timer) -> AsyncGenerator[TokenEvent]:
    """The instance's token stream, timed; closing this generator cancels the request in the engine."""
    # Engines implement generate() as async generators: the interface promises that closing cancels.
    stream = cast(AsyncGenerator[TokenEvent], instance.generate(gen))
    try:
        async for event in stream:
            timer.token()
            yield event
        timer.done()
    finally:
        await stream.aclose()


async def _whole(
    req: GenerationRequest, instance: Instance, gen: GenerateRequest, arrived: float, runtime: WorkerRuntime
) -> web.StreamResponse:
    timer = _Timer(runtime, req.model, arrived)
    pieces: list[str] = []
    last: TokenEvent | None = None
    try:
        async for event in _events(instance, gen, timer):
            pieces.append(event.text)
            last = event
    except InvalidFieldError as exc:  # e.g. a prompt longer than the replica's KV space
        return _error(400, str(exc), param=exc.field)
    except UnavailableError as exc:  # e.g. the KV space it needs is lent out now: the client retries
        return _error(503, str(exc), code="replica_unavailable")
    if last is None:
        return _error(500, "the engine produced no token")
    body = response_body(
        req,
        new_id(req.kind),
        "".join(pieces),
        last.finish_reason or "length",
        last.prompt_tokens,
        last.index + 1,
    )
    return web.json_response(body)


async def _stream(
    request: web.Request,
    req: GenerationRequest,
    instance: Instance,
    gen: GenerateRequest,
    arrived: float,
    runtime: WorkerRuntime,
) -> web.StreamResponse:
    timer = _Timer(runtime, req.model, arrived)
    rid = new_id(req.kind)
    events = _events(instance, gen, timer)
    try:
        first = await anext(events)
    except InvalidFieldError as exc:
        await events.aclose()
        return _error(400, str(exc), param=exc.field)
    except UnavailableError as exc:
        await events.aclose()
        return _error(503, str(exc), code="replica_unavailable")
    except StopAsyncIteration:
        return _error(500, "the engine produced no token")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        await _send_event(response, req, rid, first)
        async for event in events:
            await _send_event(response, req, rid, event)
        await response.write(sse("[DONE]"))
    except Exception as exc:  # after the first byte: end the stream with an error event, never a retry
        await response.write(sse(error_body(str(exc), kind="server_error")))
    finally:
        await events.aclose()
    await response.write_eof()
    return response


async def _send_event(
    response: web.StreamResponse, req: GenerationRequest, rid: str, event: TokenEvent
) -> None:
    if event.text:
        await response.write(sse(chunk_body(req, rid, event.text, None)))
    if event.finish_reason is not None:
        await response.write(sse(chunk_body(req, rid, "", event.finish_reason)))


async def _models(request: web.Request) -> web.Response:
    return web.json_response(models_body(request.app[RUNTIME_KEY].served_models()))


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _state(request: web.Request) -> web.Response:
    return web.Response(text=request.app[RUNTIME_KEY].observed().to_json(), content_type="application/json")


async def _put_desired(request: web.Request) -> web.Response:
    """Accept a desired state (202; a repeat of the accepted generation too), or say which field is
    wrong (400) or that it is older than the accepted one (409), or that the writer lacks the control
    token (401, before the body is read); the feed decides, the runtime follows."""
    feed = request.app[FEED_KEY]
    if not request.app[TOKEN_KEY] and not request.app[OPEN_KEY]:
        message = (
            "this worker follows its Pod's warmserve.io/desired annotation (--kube): PUT /desired is "
            "refused unless the worker is started with --control-token"
        )
        return _error(403, message, param="Authorization", code="forbidden")
    if not _authorized(request):
        message = "Authorization: expected 'Bearer <the worker's control token>'"
        return _error(401, message, param="Authorization", code="unauthorized")
    try:
        document = await _body(request)
    except BodyTimeoutError as exc:
        return _timed_out(exc)
    match feed.offer(document, f"HTTP PUT /desired from {request.remote}"):
        case Reject(rejection):
            return _error(400, rejection.message, param=rejection.field)
        case Ignore(generation, accepted) if generation < accepted:
            message = f"generation {generation} is older than the accepted generation {accepted}"
            return _error(409, message, param="generation", code="stale_generation")
        case Accept() | Ignore():
            pass
    body: dict[str, Any] = {"accepted_generation": feed.generation}
    return web.Response(text=json.dumps(body), status=202, content_type="application/json")


def _authorized(request: web.Request) -> bool:
    """Whether the request may write desired state: no token configured (and writing open, checked by
    the caller), or the right one sent (compared in constant time, so the answer's timing does not
    reveal how much of a guess was right)."""
    token = request.app[TOKEN_KEY]
    sent = request.headers.get("Authorization", "")
    return not token or hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[RUNTIME_KEY].metrics.render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
