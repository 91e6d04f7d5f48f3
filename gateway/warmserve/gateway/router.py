"""The gateway's live routing state: instances, our in-flight counts, the wait queues, the demand counts.

``acquire`` returns an instance with a slot reserved for the request (our count for it raised by one), or
waits in the model's queue; ``release`` gives the slot back and hands it to the oldest waiter that can use
it. A new instance table (from discovery) hands capacity to waiters too. A new arrival never overtakes a
waiting request of its model (no barging), so holding is FIFO. All of this runs on one event loop, so
each method is atomic with respect to the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from warmserve.gateway.admission import WaitQueue
from warmserve.gateway.config import DeclaredModel
from warmserve.gateway.instances import Incarnation, Instance, InstanceKey, pick_instance
from warmserve.protocol.demand_report import ModelDemand

InstanceTable = Mapping[str, tuple[Instance, ...]]  # model → its serving instances
Exclude = frozenset[Incarnation]  # the instances that failed one request


class Router:
    """Routing state of one gateway; models outside ``models`` are the caller's to refuse."""

    def __init__(self, models: Sequence[DeclaredModel], queue_limit: int) -> None:
        self._caps = {m.name: m.max_concurrency for m in models}
        self._table: InstanceTable = MappingProxyType({})
        self._inflight: dict[InstanceKey, int] = {}
        self._model_inflight = dict.fromkeys(self._caps, 0)
        self._arrivals = dict.fromkeys(self._caps, 0)
        self._queues: dict[str, WaitQueue[Instance, Exclude]] = {
            name: WaitQueue(queue_limit, self.release) for name in self._caps
        }

    @property
    def table(self) -> InstanceTable:
        return self._table

    def update(self, table: InstanceTable) -> None:
        """Adopt a new instance table and hand any new capacity to waiting requests."""
        self._table = MappingProxyType(dict(table))
        for name in self._queues:
            self._hand_out(name)

    def arrive(self, model: str) -> None:
        """Count a valid request for ``model`` (demand: arrivals)."""
        self._arrivals[model] += 1

    async def acquire(self, model: str, exclude: Exclude, deadline: float) -> Instance:
        """An instance of ``model`` with a slot reserved, not in ``exclude``; waits until ``deadline``.

        Raises :class:`~warmserve.gateway.admission.QueueFull` or
        :class:`~warmserve.gateway.admission.HoldExpired` when no instance is had.
        """
        queue = self._queues[model]
        instance = None if len(queue) else self._take(model, exclude)
        return instance if instance is not None else await queue.wait(exclude, deadline)

    def release(self, instance: Instance) -> None:
        """Give back the slot ``acquire`` reserved on ``instance``."""
        left = self._inflight[instance.key] - 1
        if left:
            self._inflight[instance.key] = left
        else:
            del self._inflight[instance.key]
        self._model_inflight[instance.model] -= 1
        self._hand_out(instance.model)

    def demand(self) -> dict[str, ModelDemand]:
        """Demand per declared model now."""
        return {
            name: ModelDemand(self._model_inflight[name], len(self._queues[name]), self._arrivals[name])
            for name in self._caps
        }

    def _take(self, model: str, exclude: Exclude) -> Instance | None:
        instance = pick_instance(self._table.get(model, ()), self._inflight, self._caps[model], exclude)
        if instance is not None:
            self._inflight[instance.key] = self._inflight.get(instance.key, 0) + 1
            self._model_inflight[model] += 1
        return instance

    def _hand_out(self, model: str) -> None:
        queue = self._queues.get(model)
        if queue is not None and len(queue):
            queue.hand_out(lambda exclude: self._take(model, exclude))
