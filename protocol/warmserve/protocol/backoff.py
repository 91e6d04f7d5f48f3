"""How long to wait before retrying something that failed: one rule for every retry loop (the worker's and
the operator's watches of the API server, the local runner restarting a child process)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Pause before retry ``n`` (0: after a success): ``initial * factor**n``, at most ``maximum`` s."""

    initial: float = 0.2
    factor: float = 2.0
    maximum: float = 10.0

    def delay(self, failures: int) -> float:
        return min(self.maximum, self.initial * self.factor**failures)


DEFAULT_BACKOFF = Backoff()
