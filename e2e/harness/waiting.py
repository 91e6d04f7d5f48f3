"""One way to wait for the cluster: poll a check until it answers, or fail naming what never happened.

The tests, the end-to-end scenario and the benchmarks all wait on an eventually consistent cluster (a Pod
Running, a status written, an object gone); a failure must say what was awaited and for how long."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Seconds a test waits by default: far above what the control plane takes, even on a loaded machine.
WAIT_S = 30.0


class TimedOut(AssertionError):
    """What was awaited did not happen in time; an assertion error, so a test reports it as a failure."""


def wait_for(what: str, check: Callable[[], T | None], timeout: float = WAIT_S, interval: float = 0.1) -> T:
    """``check()`` every ``interval`` seconds until it returns something truthy, which is returned.
    Raises :class:`TimedOut` naming ``what`` after ``timeout`` seconds; whatever ``check`` raises passes
    through (an API error is not a wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise TimedOut(f"timed out after {timeout:.0f} s waiting for {what}")
