"""Where a worker's desired state comes from: its own Pod's annotation (a Kubernetes watch) or a file.

Each channel hands the raw documents it reads to a :class:`~.desired_feed.DesiredFeed`, which judges them
by the rules every channel shares (:mod:`.desired_feed`), and offers the worker that feed to iterate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from warmserve.protocol.backoff import DEFAULT_BACKOFF, Backoff
from warmserve.protocol.kube_http import KubeHttp
from warmserve.protocol.list_watch import ListWatch
from warmserve.protocol.pods import Pod
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

    The Pod is followed by a :class:`~warmserve.protocol.list_watch.ListWatch` on its name (list, then
    watch from its resourceVersion; list again after the stream ends or a ``410 Gone``, after a
    :class:`Backoff` when the API server fails), so a reconnect is lossless: whatever was written
    meanwhile is in the listed object. The name is checked again here, for servers that ignore field
    selectors. ``api`` is plain HTTP (:class:`~warmserve.protocol.kube_http.KubeHttp`): a worker never
    imports the ``kubernetes`` client (docs/worker-protocol.md). A Pod that is not there (not yet, or
    deleted) keeps the current desired state. Use as ``async with``; runs until the block exits. Leaving the
    block shuts an open watch at once, but waits for a list in flight (at most ``request_timeout`` seconds).
    """

    def __init__(
        self,
        api: KubeHttp,
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
        self._pod = pod
        self._origin = f"pod {pod} annotation {DESIRED_ANNOTATION}"
        self._watch = ListWatch(
            api.pod_lister(),
            pod.namespace,
            "",
            field_selector=f"metadata.name={pod.name}",
            on_change=self._changed,
            request_timeout_s=request_timeout,
            watch_timeout_s=watch_timeout,
            backoff=backoff,
        )
        self._present = False
        self._last_text: str | None = None

    async def __aenter__(self) -> Self:
        await self._watch.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._watch.__aexit__(exc_type, exc, tb)
        self.feed.close()

    def _changed(self, pods: Sequence[Pod]) -> None:
        """With the Pods listed or watched (on the event loop): find ours and read its annotation."""
        mine = [p for p in pods if p["metadata"].get("name") == self._pod.name]
        if not mine:
            if self._present:
                log.warning("pod %s gone; keeping the current desired state", self._pod)
            self._present = False
            return
        self._present = True
        self._seen(mine[0]["metadata"].get("annotations") or {})

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
            self.feed.offer(str(text), self._origin)


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
