"""Where a worker's desired state comes from: its own Pod's annotation (a Kubernetes watch) or a file.

Every channel hands raw documents to one :class:`DesiredFeed`, which decides what each means with the
pure :func:`judge` and offers the worker one interface: an async iterator of accepted
:class:`DesiredState` values in increasing generation (a slow consumer skips intermediate ones and
gets the newest: each document is complete, converging to the newest is what matters), plus the
latest :class:`Rejection` for ``ObservedState.error``. The worker's HTTP server (``PUT``) feeds the same
kind of feed and answers from the :data:`Verdict` that :meth:`DesiredFeed.offer` returns.

Rules, the same for every channel:

- a document that fails validation, or names another worker, is rejected: the error names the field,
  the previous state is kept and nothing is yielded;
- a generation equal to the one accepted is a repeat (re-list, unrelated Pod update) and is ignored
  quietly (it clears a rejection: the document in place is valid again); a lower one is stale,
  ignored with a log line;
- a missing document (no annotation yet, no file yet, annotation removed, Pod deleted) changes
  nothing: the last accepted state stays in force.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import kubernetes.client
import kubernetes.watch

from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.kube_api import DEFAULT_BACKOFF, KUBE_ERRORS, Backoff, brief
from warmserve.protocol.state import DESIRED_ANNOTATION, DesiredState

log = logging.getLogger(__name__)


# --- deciding what a document means (pure) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a desired-state document was refused; ``message`` is what the worker reports as its error."""

    field: str
    message: str
    origin: str  # where the document came from, e.g. "pod ns/name annotation warmserve.io/desired"


@dataclass(frozen=True, slots=True)
class Accept:
    state: DesiredState


@dataclass(frozen=True, slots=True)
class Ignore:
    generation: int
    accepted: int  # the generation accepted before; ``generation < accepted`` means stale


@dataclass(frozen=True, slots=True)
class Reject:
    rejection: Rejection


Verdict = Accept | Ignore | Reject


#: A worker's own checks of a parsed document (its GPU count, say): raise :class:`InvalidFieldError`.
Check = Callable[[DesiredState], None]


def judge(
    text: str | bytes, *, worker: str, accepted: int, origin: str, check: Check | None = None
) -> Verdict:
    """Decide what a raw document means to ``worker``, given the generation accepted so far (-1: none).

    ``check`` adds the worker's own rules; a document it refuses is rejected like a malformed one.
    """
    try:
        state = DesiredState.from_json(text)
        if state.worker != worker:
            raise InvalidFieldError("worker", f"this worker's name {worker!r}", state.worker)
        if check is not None:
            check(state)
    except InvalidFieldError as exc:
        return Reject(Rejection(field=exc.field, message=str(exc), origin=origin))
    if state.generation <= accepted:
        return Ignore(generation=state.generation, accepted=accepted)
    return Accept(state)


# --- the one interface every channel offers -----------------------------------------------------


class DesiredSource(Protocol):
    """What the worker consumes: accepted states in order, and why the latest document was refused."""

    @property
    def rejection(self) -> Rejection | None: ...

    def __aiter__(self) -> DesiredFeed: ...


class DesiredFeed:
    """Judges documents as they arrive and hands accepted states to one consumer.

    Call :meth:`offer` on the event loop that iterates the feed (threads use
    ``loop.call_soon_threadsafe``). Iteration waits for the next accepted state; it ends after
    :meth:`close`, and raises what a channel passed to :meth:`fail` (a channel that cannot go on).
    """

    def __init__(
        self, worker: str, on_reject: Callable[[Rejection], None] | None = None, check: Check | None = None
    ) -> None:
        self.worker = worker
        self.check = check
        self.rejection: Rejection | None = None
        self.last_verdict: Verdict | None = None
        self._on_reject = on_reject
        self._accepted = -1
        self._pending: DesiredState | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self._wake = asyncio.Event()

    @property
    def generation(self) -> int:
        """The generation last accepted (-1: none yet)."""
        return self._accepted

    def offer(self, text: str | bytes, origin: str) -> Verdict:
        """Judge one raw document; queue it if accepted, record (and report) it if rejected."""
        verdict = judge(text, worker=self.worker, accepted=self._accepted, origin=origin, check=self.check)
        self.last_verdict = verdict
        match verdict:
            case Accept(state):
                self._accepted = state.generation
                self._pending = state
                self.rejection = None
                self._wake.set()
            case Ignore(generation, accepted) if generation < accepted:
                log.warning(
                    "ignoring stale desired generation %d from %s: %d accepted", generation, origin, accepted
                )
            case Ignore():
                self.rejection = None
            case Reject(rejection):
                log.warning("rejected desired state from %s: %s", origin, rejection.message)
                self.rejection = rejection
                if self._on_reject is not None:
                    self._on_reject(rejection)
        return verdict

    def fail(self, error: BaseException) -> None:
        """End iteration with ``error`` once the pending state, if any, has been taken."""
        self._failure = error
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def __aiter__(self) -> DesiredFeed:
        return self

    async def __anext__(self) -> DesiredState:
        while self._pending is None:
            if self._failure is not None:
                raise self._failure
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        state, self._pending = self._pending, None
        return state


# --- Kubernetes: the worker's own Pod ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodRef:
    """The worker's own Pod, which carries its desired state and receives its observed state."""

    namespace: str
    name: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PodRef:
        """Read ``POD_NAMESPACE`` and ``POD_NAME`` (set by the downward API); raise naming the missing one."""
        env = os.environ if env is None else env
        for var in ("POD_NAMESPACE", "POD_NAME"):
            if not env.get(var):
                raise InvalidFieldError(
                    var, "the worker Pod's namespace and name (downward API)", env.get(var)
                )
        return cls(namespace=env["POD_NAMESPACE"], name=env["POD_NAME"])

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class PodAnnotationSource:
    """Follows the ``warmserve.io/desired`` annotation of the worker's own Pod.

    One thread runs the synchronous kubernetes client in a loop: list the Pod (the current document
    and a resourceVersion), then watch from there until the stream ends (the server's timeout, a
    restart), breaks, or answers 410 Gone; pause (:class:`Backoff`, growing with consecutive
    failures) and list again. Listing again is what makes a reconnect lossless: whatever was written
    meanwhile is in the listed object. The API server's field selector is used and the name checked
    again here, for servers that ignore selectors. Use as ``async with``; runs until the block exits.
    Leaving the block shuts an open watch at once, but waits for a list in flight (at most
    ``request_timeout`` seconds).
    """

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        pod: PodRef,
        *,
        worker: str | None = None,
        on_reject: Callable[[Rejection], None] | None = None,
        check: Check | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        watch_timeout: int = 300,
        request_timeout: float = 10.0,
    ) -> None:
        self.feed = DesiredFeed(worker or pod.name, on_reject, check)
        self._core = kubernetes.client.CoreV1Api(api)
        self._pod = pod
        self._origin = f"pod {pod} annotation {DESIRED_ANNOTATION}"
        self._backoff = backoff
        self._watch_timeout = watch_timeout
        self._request_timeout = request_timeout
        self._stopping = threading.Event()
        self._watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_text: str | None = None

    @property
    def rejection(self) -> Rejection | None:
        return self.feed.rejection

    def __aiter__(self) -> DesiredFeed:
        return self.feed

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"desired-watch {self._pod}", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        while self._thread is not None and self._thread.is_alive():
            # Shuts the streaming socket down, so the thread wakes at once; repeated because a
            # stream that starts just after a stop() forgets it.
            self._watch.stop()  # type: ignore[no-untyped-call]
            await asyncio.to_thread(self._thread.join, 0.05)
        self.feed.close()

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as exc:
            if self._stopping.is_set():  # a socket shut under the client can fail in many ways
                log.debug("pod %s watch ended while stopping: %r", self._pod, exc)
            else:  # a bug, not the API: the consumer's iteration ends with it
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self.feed.fail, exc)

    def _follow(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._watch_from(self._list())
                failures = 0
            except KUBE_ERRORS as exc:
                if self._stopping.is_set():
                    break
                failures += 1
                log.warning("watching pod %s failed (%d in a row): %s", self._pod, failures, brief(exc))
            self._stopping.wait(self._backoff.delay(failures))

    def _list(self) -> str | None:
        listing = self._core.list_namespaced_pod(
            self._pod.namespace,
            field_selector=f"metadata.name={self._pod.name}",
            _request_timeout=self._request_timeout,
        )
        found = [
            pod.metadata.annotations or {}
            for pod in listing.items
            if pod.metadata is not None and pod.metadata.name == self._pod.name
        ]
        if not found:
            log.info("pod %s not found; keeping the current desired state", self._pod)
        for pod_annotations in found:
            self._seen(pod_annotations)
        version: str | None = listing.metadata.resource_version if listing.metadata else None
        return version

    def _watch_from(self, version: str | None) -> None:
        events = self._watch.stream(  # type: ignore[no-untyped-call]
            self._core.list_namespaced_pod,
            self._pod.namespace,
            field_selector=f"metadata.name={self._pod.name}",
            resource_version=version,
            timeout_seconds=self._watch_timeout,  # also turns off the client's own silent retries
            _request_timeout=(self._request_timeout, self._watch_timeout + self._request_timeout),
        )
        for event in events:
            if self._stopping.is_set():
                return
            metadata = event["raw_object"].get("metadata", {})
            if metadata.get("name") != self._pod.name:
                continue
            if event["type"] == "DELETED":
                log.warning("pod %s deleted; keeping the current desired state", self._pod)
                continue
            self._seen(metadata.get("annotations") or {})

    def _seen(self, annotations: Mapping[str, Any]) -> None:
        """Hand the annotation to the feed if it changed (most Pod updates leave it alone)."""
        text = annotations.get(DESIRED_ANNOTATION)
        if text is None:
            if self._last_text is not None:
                log.warning(
                    "pod %s lost its %s annotation; keeping the current state", self._pod, DESIRED_ANNOTATION
                )
            self._last_text = None
        elif text != self._last_text:
            self._last_text = text
            assert self._loop is not None  # set before the thread starts
            self._loop.call_soon_threadsafe(self.feed.offer, str(text), self._origin)


# --- the local runner: a file -------------------------------------------------------------------


class FileSource:
    """Follows a JSON file, for the local runner (no Kubernetes).

    Polls the file's inode, times and size every ``interval`` seconds and reads it when any changed.
    Writers should replace it atomically (write a temporary file, rename it over: see
    :func:`warmserve.worker.observed_sink.write_atomically`); a reader that catches a non-atomic write
    half-done rejects it and reads again at the next change. A missing file is waited for; a file
    that cannot be read (permissions, not UTF-8) is logged and read again when it changes (a chmod
    counts). Use as ``async with``.
    """

    def __init__(
        self,
        path: Path,
        worker: str,
        *,
        interval: float = 0.2,
        on_reject: Callable[[Rejection], None] | None = None,
        check: Check | None = None,
    ) -> None:
        self.feed = DesiredFeed(worker, on_reject, check)
        self._path = path
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    @property
    def rejection(self) -> Rejection | None:
        return self.feed.rejection

    def __aiter__(self) -> DesiredFeed:
        return self.feed

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"desired-file {self._path}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.feed.close()

    async def _run(self) -> None:
        try:
            await self._poll()
        except Exception as exc:  # a bug, not the file: the consumer's iteration ends with it
            self.feed.fail(exc)

    async def _poll(self) -> None:
        origin = f"file {self._path}"
        seen: tuple[int, int, int, int] | None = None
        while True:
            try:
                stat = self._path.stat()
                signature = (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
                if signature != seen:
                    seen = signature
                    self.feed.offer(self._path.read_text(encoding="utf-8"), origin)
            except FileNotFoundError:
                seen = None
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("cannot read desired state from %s: %s", self._path, exc)
            await asyncio.sleep(self._interval)
