"""``ListWatch``: the objects one selector matches in one namespace, kept current by one list-then-watch.

The one way every WarmServe component follows objects of the API (docs/kube-cluster.md): the operator its
worker and gateway Pods, a worker its own Pod's annotation, the gateway the worker Pods it routes to and
the ModelDeployments it serves. What is listed is a *lister* (:data:`Lister`): the ``kubernetes`` client's
(:func:`warmserve.protocol.kube_api.pod_lister`, :func:`~warmserve.protocol.kube_api.custom_lister`) for the
operator and the gateway, plain HTTP's (:meth:`warmserve.protocol.kube_http.KubeHttp.pod_lister`) for the
worker, which does not import that client; this module imports neither.

One thread lists the objects (the set and a resourceVersion), then watches from there until the stream ends
(the server's ``timeoutSeconds``), breaks, or answers ``410 Gone``; then lists again. Listing again is what
makes a reconnect lossless: whatever changed meanwhile is in the new list, which replaces the set whole.
Objects are kept as the API server's JSON (the client's model objects cost milliseconds per Pod to build and
say nothing more). Use it as ``async with`` (or :meth:`~ListWatch.start` and :meth:`~ListWatch.stop` it from
synchronous code); after each list and each event, ``on_change`` (if given) is called with the objects now on
the event loop that entered the block.

A set that may be stale is never read: :meth:`ListWatch.items` raises :class:`UnavailableError` before
the first list has succeeded, and from a failed list or a broken watch until the next list succeeds
(retried after a :class:`~warmserve.protocol.backoff.Backoff` that grows with consecutive failures). A
stream that ends cleanly, or a ``410 Gone``, is followed by a new list at once and keeps the set readable
meanwhile. A failure that is not the API server's (a bug) is logged with its stack and retried the same
way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import urllib3

from warmserve.protocol.backoff import DEFAULT_BACKOFF, Backoff
from warmserve.protocol.errors import UnavailableError
from warmserve.protocol.kube_http import HTTP_ERRORS, ApiError, Query, Timeout, brief

log = logging.getLogger(__name__)

#: Lists (or, with ``watch`` in the query, watches) one namespace's objects: ``lister(namespace, query,
#: timeout)`` with the API's query parameters (``labelSelector``, ``fieldSelector``, ``watch``,
#: ``resourceVersion``, ``allowWatchBookmarks``, ``timeoutSeconds``) and the request's timeout; returns the
#: urllib3 response with its body unread, raises :class:`ApiError` for an answer other than 2xx.
Lister = Callable[[str, Query, Timeout], urllib3.BaseHTTPResponse]
#: One object as the API server's JSON.
Object = Mapping[str, Any]

#: What following objects may fail with: the API server unreachable or refusing, or an answer that is not JSON
#: of the expected shape.
FOLLOW_ERRORS: tuple[type[Exception], ...] = (*HTTP_ERRORS, ValueError, KeyError, TypeError)


class Gone(Exception):
    """The watch's resourceVersion is too old (``410 Gone``): list again, at once."""


class ListWatch:
    """The objects ``lister`` gives that ``selector`` (labels; ``field_selector`` too if given) matches in
    ``namespace``; ``kind`` names them in logs and errors.

    ``async with`` it (``on_change(objects)`` then runs on that event loop), or :meth:`start` and
    :meth:`stop` it (without ``on_change``)."""

    def __init__(
        self,
        lister: Lister,
        namespace: str,
        selector: str,
        *,
        field_selector: str | None = None,
        on_change: Callable[[Sequence[Object]], None] | None = None,
        request_timeout_s: float,
        watch_timeout_s: int = 60,
        backoff: Backoff = DEFAULT_BACKOFF,
        kind: str = "Pods",
    ) -> None:
        self.lister = lister
        self.namespace = namespace
        self.selector = selector
        self.field_selector = field_selector
        self.on_change = on_change
        self.request_timeout_s = request_timeout_s
        self.watch_timeout_s = watch_timeout_s
        self.backoff = backoff
        self.tried = threading.Event()  # set once the first list has succeeded or failed
        self._what = f"{kind} {' '.join(filter(None, (selector, field_selector)))} in namespace {namespace}"
        self._lock = threading.Lock()
        self._objects: dict[str, Object] = {}
        self._error: str | None = "not listed yet"
        self._stopping = threading.Event()
        self._stream: Any = None  # the open watch response, shut by stop() to wake the thread
        self._loop: asyncio.AbstractEventLoop | None = None  # where on_change runs
        self._thread = threading.Thread(target=self._run, name=f"{kind} {namespace}/{selector}", daemon=True)

    def items(self) -> list[Object]:
        """The objects now; :class:`UnavailableError` when the set is not known to be current."""
        with self._lock:
            if self._error is not None:
                raise UnavailableError(f"{self._what} unknown now: {self._error}")
            return list(self._objects.values())

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> None:
        """Start following in the watch's thread; ``on_change`` needs ``async with`` instead."""
        if self.on_change is not None and self._loop is None:
            raise RuntimeError("a ListWatch with on_change runs inside `async with`, on its event loop")
        self._thread.start()

    def stop(self) -> None:
        """Stop following (blocking: an open watch is shut at once, a list in flight is waited for)."""
        self._stopping.set()
        while self._thread.is_alive():
            stream = self._stream
            if stream is not None:
                stream.shutdown()  # wakes the blocked read; repeated, as a stream may open just after
            self._thread.join(0.05)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._watch(self._list())
                failures = 0
            except Gone:
                log.info("watching %s: resourceVersion expired (410 Gone); listing again", self._what)
                failures = 0
                continue
            except Exception as exc:
                if self._stopping.is_set():  # a socket shut under the client can fail in many ways
                    break
                failures += 1
                self._fail(exc, failures)
            self._stopping.wait(self.backoff.delay(failures) if failures else 0.0)

    def _fail(self, exc: Exception, failures: int) -> None:
        """Mark the set unreadable until the next list; a bug (not the API) is logged with its stack."""
        with self._lock:
            self._error = brief(exc)
        self.tried.set()
        if isinstance(exc, FOLLOW_ERRORS):
            log.warning("following %s failed (%d in a row): %s", self._what, failures, brief(exc))
        else:
            log.exception("following %s failed", self._what)

    def _list(self) -> str:
        response = self.lister(self.namespace, self._query(), self.request_timeout_s)
        try:
            listing = json.loads(response.data)
        finally:
            response.release_conn()
        with self._lock:
            self._objects = {obj["metadata"]["name"]: obj for obj in listing["items"]}
            self._error = None
        self.tried.set()
        self._changed()
        version: str = listing["metadata"]["resourceVersion"]
        return version

    def _watch(self, version: str) -> None:
        """Apply the watch's events from ``version`` on, until the stream ends; :class:`Gone` for 410."""
        query = {
            **self._query(),
            "watch": True,
            "resourceVersion": version,
            "allowWatchBookmarks": True,
            "timeoutSeconds": self.watch_timeout_s,
        }
        timeout = (self.request_timeout_s, self.watch_timeout_s + self.request_timeout_s)
        try:
            self._stream = self.lister(self.namespace, query, timeout)
        except ApiError as exc:
            if exc.status == 410:
                raise Gone() from exc
            raise
        try:
            if self._stopping.is_set():
                return
            for line in _lines(self._stream):
                if line:
                    self._seen(json.loads(line))
        finally:
            stream, self._stream = self._stream, None
            stream.close()
            stream.release_conn()

    def _query(self) -> Query:
        return {"labelSelector": self.selector, "fieldSelector": self.field_selector}

    def _seen(self, event: Mapping[str, Any]) -> None:
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise ApiError(obj.get("code", 0), obj.get("reason", ""), obj.get("message", ""))
        if kind == "BOOKMARK":
            return
        name = obj["metadata"]["name"]
        with self._lock:
            if kind == "DELETED":
                self._objects.pop(name, None)
            else:
                self._objects[name] = obj
        self._changed()

    def _changed(self) -> None:
        """Hand the objects now to ``on_change``, on the event loop (a closed loop: we are stopping)."""
        if self.on_change is not None and self._loop is not None:
            with self._lock:
                objects = list(self._objects.values())
            try:
                self._loop.call_soon_threadsafe(self.on_change, objects)
            except RuntimeError:  # the loop closed under a watch not stopped yet
                self._stopping.set()


def _lines(stream: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The lines of a watch stream as they arrive (one JSON event each), whatever the chunks' sizes."""
    pending = b""
    for chunk in stream.stream(None, decode_content=False):
        *lines, pending = (pending + chunk).split(b"\n")
        yield from lines
    if pending:
        yield pending
