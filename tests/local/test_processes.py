"""Child processes: each in its own group, all stopped on exit — grandchildren and stubborn ones too."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from warmserve.local.processes import ChildError, Children, ChildSpec, free_port

from .process_checks import alive, assert_all_gone

SPAWNS_GRANDCHILD = (
    "import subprocess, sys, time;"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']);"
    "print(p.pid, flush=True); time.sleep(120)"
)
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    "print('up', flush=True); time.sleep(120)"
)


def wait_for_line(path: Path) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.strip():
            return text.strip().splitlines()[0]
        time.sleep(0.02)
    raise AssertionError(f"{path} stayed empty")


def test_leaving_the_block_stops_children_grandchildren_and_stubborn_ones(tmp_path: Path) -> None:
    with Children(tmp_path, grace_s=0.5) as children:
        parent = children.start(ChildSpec("parent", (sys.executable, "-c", SPAWNS_GRANDCHILD), ""))
        stubborn = children.start(ChildSpec("stubborn", (sys.executable, "-c", IGNORES_SIGTERM), ""))
        grandchild = int(wait_for_line(children.log_path("parent")))
        wait_for_line(children.log_path("stubborn"))
        assert alive(grandchild) and os.getpgid(parent.pid) == parent.pid != os.getpgid(0)
        started = time.monotonic()
    assert time.monotonic() - started < 10
    assert parent.returncode is not None and stubborn.returncode is not None
    assert_all_gone([grandchild])  # reaped by init once its group was killed


def test_an_error_inside_the_block_still_stops_everything(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), Children(tmp_path, grace_s=0.5) as children:
        proc = children.start(
            ChildSpec("sleeper", (sys.executable, "-c", "import time; time.sleep(120)"), "")
        )
        raise RuntimeError("boom")
    assert proc.returncode is not None


def test_a_child_that_exits_before_ready_is_reported_with_its_log(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/readyz"
    spec = ChildSpec("broken", (sys.executable, "-c", "print('bad option --x'); raise SystemExit(2)"), url)
    with (
        Children(tmp_path) as children,
        pytest.raises(ChildError, match=r"broken exited with code 2: bad option --x"),
    ):
        children.start_all([spec], timeout_s=20)


def test_a_child_never_ready_times_out_naming_its_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/readyz"
    spec = ChildSpec("mute", (sys.executable, "-c", "import time; time.sleep(120)"), url)
    with Children(tmp_path, grace_s=0.5) as children, pytest.raises(ChildError, match="mute not ready"):
        children.start_all([spec], timeout_s=0.5)


def test_stopping_while_start_all_waits_in_a_thread_ends_the_wait_and_starts_nothing_more(
    tmp_path: Path,
) -> None:
    """Ctrl-C stops the children from the event loop while ``start_all`` waits in a worker thread."""
    url = f"http://127.0.0.1:{free_port()}/readyz"
    spec = ChildSpec("mute", (sys.executable, "-c", "import time; time.sleep(120)"), url)
    children = Children(tmp_path, grace_s=0.5)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            children.start_all([spec], timeout_s=60.0)
        except ChildError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=start)
    waiter.start()
    while "mute" not in children.procs:
        time.sleep(0.01)
    started = time.monotonic()
    children.stop_all()
    waiter.join(timeout=10)
    assert not waiter.is_alive() and time.monotonic() - started < 10  # not the 60 s readiness timeout
    assert errors and "stopping" in str(errors[0])
    assert children.procs["mute"].poll() is not None
    with pytest.raises(ChildError, match="late not started: the run is stopping"):
        children.start(ChildSpec("late", (sys.executable, "-c", "pass"), url))
