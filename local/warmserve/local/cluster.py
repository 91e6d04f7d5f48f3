"""``LocalCluster``: the scheduler's :class:`~warmserve.operator.ports.Cluster` port over HTTP.

Workers are local processes (or any reachable worker servers); the gateway reports demand. ``observe``
reads every worker's ``GET /state`` and the gateway's ``GET /demand`` in parallel; ``apply`` writes
``PUT /desired`` to each worker (docs/worker-api.md).

Failures: a worker that does not answer, answers an error or an invalid report is *left out* of the
observation — to the scheduler it is gone, its replicas with it, so the very next tick replans their
load elsewhere — and the time it was first missed is kept in :attr:`LocalCluster.lost_at`. A gateway
that cannot be read makes ``observe`` raise :class:`UnavailableError` (the scheduler skips the tick
rather than plan from a demand of zero). ``apply`` returns the workers it could not write to; the loop
retries them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import aiohttp

from warmserve.operator.planning.snapshot import Demand
from warmserve.operator.ports import Observation
from warmserve.protocol.demand_report import parse_demand
from warmserve.protocol.errors import InvalidFieldError, UnavailableError
from warmserve.protocol.state import DesiredState, ObservedState

log = logging.getLogger(__name__)

#: Seconds one worker or the gateway may take to answer before it counts as unreachable this tick.
REQUEST_TIMEOUT_S = 2.0


class LocalCluster:
    """Workers by name → base URL, and the gateway's base URL. ``started`` (monotonic, for pacing the
    replay) and ``started_at`` (epoch seconds, the scheduler's clock) mark the same instant. Desired
    states are written with ``control_token``, the one the workers were started with (empty: none)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        workers: Mapping[str, str],
        gateway: str,
        control_token: str = "",
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.session = session
        self.authorization = {"Authorization": f"Bearer {control_token}"} if control_token else {}
        self.workers = dict(workers)
        self.gateway = gateway.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.started = time.monotonic()
        self.started_at = time.time()
        self.lost_at: dict[str, float] = {}  # worker → observation time it was first missing

    def now(self) -> float:
        """Epoch seconds, the clock of the ``since`` every worker reports (the :class:`Cluster` port's)."""
        return time.time()

    async def observe(self) -> Observation:
        """Every reachable worker's report and the gateway's demand (see the module docstring)."""
        now = self.now()
        names = sorted(self.workers)
        reports, demand = await asyncio.gather(
            asyncio.gather(*(self._state(n) for n in names)), self._demand()
        )
        observed: dict[str, ObservedState] = {}
        for name, report in zip(names, reports, strict=True):
            if report is None:
                self.lost_at.setdefault(name, now)
            else:
                self.lost_at.pop(name, None)
                observed[name] = report
        return Observation(now=now, workers=observed, demand=demand)

    async def apply(self, desired: Mapping[str, DesiredState]) -> set[str]:
        """``PUT /desired`` to each worker; the names of those that did not accept it."""
        names = sorted(desired)
        accepted = await asyncio.gather(*(self._put(n, desired[n]) for n in names))
        return {name for name, ok in zip(names, accepted, strict=True) if not ok}

    async def _state(self, name: str) -> ObservedState | None:
        url = f"{self.workers[name].rstrip('/')}/state"
        try:
            async with self.session.get(url, timeout=self.timeout) as response:
                response.raise_for_status()
                return ObservedState.from_dict(await response.json())
        except (aiohttp.ClientError, TimeoutError, InvalidFieldError, ValueError) as exc:
            log.warning("worker %s unreachable at %s: %s", name, url, exc)
            return None

    async def _demand(self) -> dict[str, Demand]:
        url = f"{self.gateway}/demand"
        try:
            async with self.session.get(url, timeout=self.timeout) as response:
                response.raise_for_status()
                doc = parse_demand(await response.json())
        except (aiohttp.ClientError, TimeoutError, InvalidFieldError, ValueError) as exc:
            raise UnavailableError(f"gateway demand unreadable at {url}: {exc}") from exc
        return {m: Demand(inflight=float(d.inflight), queued=d.queued) for m, d in doc.items()}

    async def _put(self, name: str, desired: DesiredState) -> bool:
        url = f"{self.workers[name].rstrip('/')}/desired"
        try:
            async with self.session.put(
                url, json=desired.to_dict(), headers=self.authorization, timeout=self.timeout
            ) as response:
                if response.status == 202:
                    return True
                log.warning(
                    "worker %s refused desired state: %s %s", name, response.status, await response.text()
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("worker %s unreachable at %s: %s", name, url, exc)
        return False
