"""Where a worker's desired state comes from: its own Pod's annotation (a Kubernetes watch) or a file.

Each channel hands the raw documents it reads to a :class:`~.desired_feed.DesiredFeed`, which judges them
by the rules every channel shares (:mod:`.desired_feed`), and offers the worker that feed to iterate.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import kubernetes.client
import kubernetes.watch

from warmserve.protocol.backoff import DEFAULT_BACKOFF, Backoff
from warmserve.protocol.kube_api import KUBE_ERRORS, brief
from warmserve.protocol.state import DESIRED_ANNOTATION
from warmserve.worker.desired_feed import Check, DesiredFeed, Rejection
from warmserve.worker.pod_ref import PodRef

log = logging.getLogger(__name__)


class FeedSource:
    """What every channel offers the worker (the :class:`~.desired_feed.DesiredSource` protocol): iterating
    it iterates its :attr:`feed`, and its rejection is the feed's."""

    feed: DesiredFeed

    @property
    def rejection(self) -> Rejection | None:
        return self.feed.rejection

    def __aiter__(self) -> DesiredFeed:
        return self.feed


# --- Kubernetes: the worker's own Pod ------------------------------------------------------------


class PodAnnotationSource(FeedSource):
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


class FileSource(FeedSource):
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
