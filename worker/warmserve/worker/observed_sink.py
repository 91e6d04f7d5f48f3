"""Where a worker reports its observed state: its own Pod's annotation, or a file for the local runner.

Reporting never stops or slows the worker: :meth:`ObservedSink.report` only records the newest
state and returns. The Pod sink writes from a background task, at most one patch per interval
(bursts of reports coalesce into the newest), and retries a failed patch with backoff, the newest
state each time, until one lands; the newest state is always written eventually. The file sink
replaces its file atomically, so a reader never sees half a document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from warmserve.protocol.backoff import DEFAULT_BACKOFF, Backoff
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.kube_http import HTTP_ERRORS, KubeHttp, brief, pod_path
from warmserve.protocol.state import OBSERVED_ANNOTATION, ObservedState
from warmserve.worker.pod_ref import PodRef

log = logging.getLogger(__name__)


class ObservedSink(Protocol):
    """Takes the worker's newest observed state; never raises, never blocks on I/O for long.

    Call it from the worker's event loop (the Pod sink wakes its writer task with an asyncio event).
    """

    def report(self, state: ObservedState) -> None: ...


class PodAnnotationSink:
    """Merge-patches ``warmserve.io/observed`` on the worker's own Pod with ``ObservedState.to_json()``.

    Use as ``async with``: the writer task runs inside the block. A report identical to the last
    one written is not written again. On exit the newest state gets one last attempt (bounded by
    ``request_timeout``); if that fails too it is logged and dropped.
    """

    def __init__(
        self,
        api: KubeHttp,
        pod: PodRef,
        *,
        interval: float = 1.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        request_timeout: float = 10.0,
    ) -> None:
        self.written: ObservedState | None = None  # the state the Pod carries, as far as we know
        self.failures = 0  # consecutive failed patches; 0 after a success
        self._api = api
        self._pod = pod
        self._interval = interval
        self._backoff = backoff
        self._request_timeout = request_timeout
        self._latest: ObservedState | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def report(self, state: ObservedState) -> None:
        self._latest = state
        self._wake.set()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._write_loop(), name=f"observed-patch {self._pod}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._latest is not None and self._latest != self.written:
            await self._write(self._latest)

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            state = self._latest
            if state is None or state == self.written:
                continue
            if await self._write(state):
                await asyncio.sleep(self._interval)  # reports arriving meanwhile coalesce
            else:
                self._wake.set()  # retry, with whatever is newest by then
                await asyncio.sleep(self._backoff.delay(self.failures))

    async def _write(self, state: ObservedState) -> bool:
        """Patch once; on failure log, count and return False (never raise: the worker must go on)."""
        body = {"metadata": {"annotations": {OBSERVED_ANNOTATION: state.to_json()}}}
        try:
            await asyncio.to_thread(
                self._api.request,
                "PATCH",
                pod_path(self._pod.namespace, self._pod.name),
                body=body,
                content_type="application/merge-patch+json",
                timeout=self._request_timeout,
            )
        except HTTP_ERRORS as exc:
            self.failures += 1
            log.warning(
                "reporting observed state to pod %s failed (%d in a row): %s",
                self._pod,
                self.failures,
                brief(exc),
            )
            return False
        self.written = state
        self.failures = 0
        return True


class FileSink:
    """Writes the observed state to a JSON file, replacing it atomically (for the local runner).

    The directory must exist when the sink is made (else :class:`InvalidFieldError` naming
    ``observed_path``); a later write failure (disk full, directory removed) is logged, not raised.
    """

    def __init__(self, path: Path) -> None:
        if not path.parent.is_dir():
            raise InvalidFieldError("observed_path", "a file in an existing directory", str(path))
        self.path = path

    def report(self, state: ObservedState) -> None:
        try:
            write_atomically(self.path, state.to_json())
        except OSError as exc:
            log.warning("writing observed state to %s failed: %s", self.path, exc)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new content, never a mix.

    Writes a temporary file in the same directory, flushes it to disk and renames it over ``path``
    (atomic on POSIX). Raises ``OSError`` on failure, leaving ``path`` as it was and no temporary file.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
