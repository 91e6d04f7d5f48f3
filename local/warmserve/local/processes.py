"""Child processes of the local runner: started in their own process group, always stopped.

Every worker and the gateway run as real processes (``sys.executable -m ...``), each the leader of a
new session so that a signal reaches it and anything it spawned. :class:`Children` is a context
manager: leaving it — normally, on an error, or on Ctrl-C — sends SIGTERM to every group, waits
``grace_s`` and SIGKILLs the stragglers, then reaps them, so no process outlives the runner. Output of
each child goes to a log file (its tail is quoted when the child fails to become ready).

:class:`Supervisor` keeps them running as a Deployment keeps its Pods: a child that exits (killed,
crashed) while the run goes on is started again with the same command — the same port — after a pause
that grows with each exit in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from warmserve.protocol.backoff import Backoff
from warmserve.protocol.errors import UnavailableError

log = logging.getLogger(__name__)


class ChildError(UnavailableError):
    """A child process exited or never became ready; the message says which and quotes its log. Temporary:
    the same run may succeed again (a port taken, a machine short of memory)."""


def free_port() -> int:
    """A TCP port free on the loopback interface now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One child to start: a name for messages and logs, its argv, the URL that says it is ready, and
    what it gets in its environment besides this process's (a secret is passed here, never in argv, which
    any local user can read)."""

    name: str
    argv: tuple[str, ...]
    ready_url: str
    env: Mapping[str, str] = field(default_factory=dict)


class Children:
    """The running children of one local run; stop them all by leaving the ``with`` block."""

    def __init__(self, log_dir: Path, grace_s: float = 5.0) -> None:
        self.log_dir = log_dir
        self.grace_s = grace_s
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.specs: dict[str, ChildSpec] = {}
        # start_all runs in a thread (the runner awaits it); on Ctrl-C stop_all runs meanwhile in the
        # event loop's thread: no child may start after it, and the waiting thread must give up at once.
        self._lock = threading.Lock()
        self._stopping = False

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None
    ) -> None:
        self.stop_all()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop_all` has begun (a child that exits now is not to be started again)."""
        return self._stopping

    def start(self, spec: ChildSpec) -> subprocess.Popen[bytes]:
        """Start ``spec`` in a new session (its own process group); output goes to ``<name>.log``
        (appended to when the child is started again, so the log keeps what the last one said).

        Raises :class:`ChildError` once :meth:`stop_all` has begun (nothing would stop the child)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._stopping:
                raise ChildError(f"{spec.name} not started: the run is stopping")
            with open(self.log_path(spec.name), "ab" if spec.name in self.procs else "wb") as out:
                proc = subprocess.Popen(
                    spec.argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, **spec.env},
                )
            self.procs[spec.name] = proc
            self.specs[spec.name] = spec
        return proc

    def restart(self, name: str, timeout_s: float = 60.0) -> None:
        """Start the child ``name`` again (its last one has exited) and wait until it is ready; raises
        :class:`ChildError` as :meth:`start_all` does, having killed a new child that is not ready."""
        spec = self.specs[name]
        self.start(spec)
        try:
            self.wait_ready(spec, time.monotonic() + timeout_s)
        except ChildError:
            self.kill(name)
            raise

    def start_all(self, specs: Sequence[ChildSpec], timeout_s: float = 60.0) -> None:
        """Start every child, then wait until each answers ``200`` at its ready URL.

        Raises :class:`ChildError` if one exits first or is not ready within ``timeout_s``.
        """
        for spec in specs:
            self.start(spec)
        deadline = time.monotonic() + timeout_s
        for spec in specs:
            self.wait_ready(spec, deadline)

    def wait_ready(self, spec: ChildSpec, deadline: float) -> None:
        proc = self.procs[spec.name]
        while time.monotonic() < deadline:
            if self._stopping:
                raise ChildError(f"{spec.name} not waited for: the run is stopping")
            if proc.poll() is not None:
                raise ChildError(
                    f"{spec.name} exited with code {proc.returncode}: {self.log_tail(spec.name)}"
                )
            if _answers_ok(spec.ready_url):
                return
            time.sleep(0.05)
        raise ChildError(f"{spec.name} not ready at {spec.ready_url} in time: {self.log_tail(spec.name)}")

    def kill(self, name: str) -> None:
        """SIGKILL one child's process group (fault injection); the :class:`Supervisor` starts it again."""
        self.signal(name, signal.SIGKILL)

    def signal(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to one child's process group (SIGSTOP and SIGCONT pause and resume it)."""
        _signal_group(self.procs[name], sig)

    def stop_all(self) -> None:
        """SIGTERM every group, wait up to ``grace_s``, SIGKILL what is left, reap everything; no child
        starts after this has begun."""
        with self._lock:
            self._stopping = True
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGKILL)  # also reaches grandchildren of an exited leader
            proc.wait()

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log_tail(self, name: str, lines: int = 5) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"


#: Pauses before a child that exited is started again: 1 s, doubling with each exit in a row, up to 30 s
#: (a Deployment's restarts back off from 10 s to 5 min; a local run is shorter).
RESTART_BACKOFF = Backoff(initial=1.0, maximum=30.0)


class Supervisor:
    """Starts again every child of ``children`` that exits while the run goes on, as a Deployment would.

    The pause before a child is started again is ``backoff.delay(n)`` for its ``n``-th exit in a row (1 s
    doubling to 30 s by default); a child that stayed up ``stable_s`` starts the count again. A child that
    does not become ready is killed and counts as one more exit. :attr:`exits` counts the exits seen and
    :attr:`restarts` the children started again and ready, per child; each is logged. Run :meth:`run`
    as a task; cancel it to stop supervising.
    """

    def __init__(
        self,
        children: Children,
        backoff: Backoff = RESTART_BACKOFF,
        stable_s: float = 60.0,
        poll_s: float = 0.1,
    ) -> None:
        self.children = children
        self.backoff = backoff
        self.stable_s = stable_s
        self.poll_s = poll_s
        self.exits: Counter[str] = Counter()
        self.restarts: Counter[str] = Counter()
        self._in_a_row: Counter[str] = Counter()
        self._up_since: dict[str, float] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Watch the children until cancelled (or until the run stops)."""
        try:
            while not self.children.stopping:
                now = time.monotonic()
                for name, proc in list(self.children.procs.items()):
                    if name in self._starting:
                        continue
                    if proc.poll() is None:
                        if now - self._up_since.setdefault(name, now) >= self.stable_s:
                            self._in_a_row[name] = 0
                        continue
                    self._starting[name] = asyncio.create_task(self._start_again(name, proc.returncode))
                await asyncio.sleep(self.poll_s)
        finally:
            for task in self._starting.values():
                task.cancel()
            await asyncio.gather(*self._starting.values(), return_exceptions=True)

    async def _start_again(self, name: str, code: int | None) -> None:
        delay = self.backoff.delay(self._in_a_row[name])
        self._in_a_row[name] += 1
        self.exits[name] += 1
        log.warning("%s exited with code %s; starting it again in %.1f s", name, code, delay)
        try:
            await asyncio.sleep(delay)
            if self.children.stopping:
                return
            await asyncio.to_thread(self.children.restart, name)
            self.restarts[name] += 1
            log.warning("%s started again and ready", name)
        except ChildError as exc:
            log.warning("%s did not start again: %s", name, exc)
        finally:
            self._up_since[name] = time.monotonic()
            del self._starting[name]


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the child's whole group; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def python_module(module: str, *args: str, python: Path | None = None) -> tuple[str, ...]:
    """argv running ``module`` with ``python`` (default: this interpreter, so the child sees the same
    installation)."""
    return (str(python) if python is not None else sys.executable, "-m", module, *args)
