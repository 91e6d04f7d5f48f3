"""Child processes that never outlive the test run: each in its own process group, killed by group on
stop, at interpreter exit and on SIGTERM, and (control-plane processes) by the kernel if this process dies."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_live: set[subprocess.Popen[bytes]] = set()
_lock = threading.Lock()


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the thread that started it ends (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = True,
    niceness: int = 0,
) -> subprocess.Popen[bytes]:
    """Starts ``argv`` in a new session (its own process group) with stdout and stderr in ``log``, its
    niceness raised by ``niceness``."""

    def before_exec() -> None:
        if die_with_parent:
            _die_with_parent()
        if niceness:
            os.nice(niceness)

    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=before_exec if die_with_parent or niceness else None,
        )
    with _lock:
        _live.add(proc)
    return proc


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Sends ``sig`` to the process group of ``proc`` (gone already: nothing happens)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM to the group, SIGKILL after ``grace`` seconds, then reaps it; also kills what it left."""
    stop_all([proc], grace)


def stop_all(procs: Sequence[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
    """Stops ``procs`` together: SIGTERM to every group, SIGKILL to what still runs after ``grace`` seconds,
    then every group is killed (a grandchild left behind) and every process reaped."""
    for proc in procs:
        if proc.poll() is None:
            signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        signal_group(proc, signal.SIGKILL)
        proc.wait()
        with _lock:
            _live.discard(proc)


def _stop_all() -> None:
    with _lock:
        procs = list(_live)
    stop_all(procs, grace=2.0)


def _on_sigterm(signum: int, frame: object) -> None:
    _stop_all()
    raise SystemExit(128 + signum)


atexit.register(_stop_all)
if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
    signal.SIG_DFL,
    None,
):
    signal.signal(signal.SIGTERM, _on_sigterm)
