"""The instance table: which serving replicas exist, learnt by polling each worker's ``GET /state``.

Every ``interval_s`` each known worker is asked for its observed state (in parallel, each bounded by a
timeout). A worker that does not answer, answers an error status, or sends a document that does not
validate is marked down: its instances leave the table at once (a request in flight there fails and is
retried elsewhere). The worker list can be replaced at run time (``set_workers``) by the local runner or
the scheduler; removed workers leave the table at once and new ones are polled right away.

Only replicas in state ``serving`` become instances, each with the time it entered that state (a replica
promoted again is a new instance, see :mod:`.routing`). Each is reached at its reported ``endpoint``; a
serving replica that reports none is reached at the worker's own base URL, which serves all its replicas
(docs/worker-api.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence

import aiohttp

from warmserve.gateway.config import check_worker_urls
from warmserve.gateway.instances import Instance
from warmserve.protocol.errors import WarmServeError
from warmserve.protocol.state import ObservedState, ReplicaState

log = logging.getLogger(__name__)

InstanceTable = Mapping[str, tuple[Instance, ...]]


def serving_instances(state: ObservedState, worker: str) -> tuple[Instance, ...]:
    """The instances a worker's observed state offers: its serving replicas."""
    return tuple(
        Instance(
            worker=worker,
            replica=r.id,
            model=r.model,
            endpoint=(r.endpoint or worker).rstrip("/"),
            reported_inflight=r.inflight,
            serving_since=r.since,
        )
        for r in state.replicas
        if r.state is ReplicaState.SERVING
    )


def instance_table(per_worker: Mapping[str, tuple[Instance, ...]]) -> dict[str, tuple[Instance, ...]]:
    """Group every worker's instances by model, each group in a stable (worker, replica) order."""
    table: dict[str, list[Instance]] = {}
    for instances in per_worker.values():
        for instance in instances:
            table.setdefault(instance.model, []).append(instance)
    return {model: tuple(sorted(group, key=lambda i: i.key)) for model, group in sorted(table.items())}


class Discovery:
    """Polls workers and reports each changed instance table to ``on_change``; runs until cancelled."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        workers: Sequence[str],
        on_change: Callable[[InstanceTable], None],
        interval_s: float = 0.5,
    ) -> None:
        self._session = session
        self._on_change = on_change
        self._interval_s = interval_s
        self._workers = check_worker_urls(workers)
        self._seen: dict[str, tuple[Instance, ...]] = {}
        self._table: InstanceTable = {}
        self._poll_now = asyncio.Event()

    @property
    def workers(self) -> tuple[str, ...]:
        return self._workers

    def set_workers(self, workers: Sequence[str]) -> None:
        """Replace the worker list; raises :class:`InvalidFieldError` for a bad URL (list unchanged)."""
        self._workers = check_worker_urls(workers)
        self._seen = {w: i for w, i in self._seen.items() if w in self._workers}
        self._publish()
        self._poll_now.set()

    async def run(self) -> None:
        """Poll forever (until cancelled), at once after ``set_workers``."""
        while True:
            await self.poll_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), self._interval_s)
            self._poll_now.clear()

    async def poll_once(self) -> None:
        """Ask every worker once and publish the table if it changed."""
        workers = self._workers
        results = await asyncio.gather(*(self._instances_of(w) for w in workers))
        if workers != self._workers:
            return  # the list changed while we polled: its own poll is due at once
        self._seen = dict(zip(workers, results, strict=True))
        self._publish()

    async def _instances_of(self, worker: str) -> tuple[Instance, ...]:
        timeout = aiohttp.ClientTimeout(total=max(self._interval_s, 1.0))
        try:
            async with self._session.get(f"{worker}/state", timeout=timeout) as resp:
                resp.raise_for_status()
                state = ObservedState.from_dict(await resp.json())
        except (aiohttp.ClientError, TimeoutError, ValueError, WarmServeError) as exc:
            if self._seen.get(worker):
                log.warning("worker %s marked down: %s", worker, exc)
            return ()
        return serving_instances(state, worker)

    def _publish(self) -> None:
        table = instance_table(self._seen)
        if table != self._table:
            self._table = table
            self._on_change(table)
