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

from warmserve.gateway.admission import HoldExpired, WaitQueue
from warmserve.gateway.config import DeclaredModel
from warmserve.gateway.instances import Incarnation, Instance, InstanceKey, pick_instance
from warmserve.protocol.demand_report import ModelDemand

InstanceTable = Mapping[str, tuple[Instance, ...]]  # model → its serving instances
Exclude = frozenset[Incarnation]  # the instances that failed one request


class ModelDropped(HoldExpired):
    """The model a request waited for stopped being served (its ModelDeployment deleted or refused)."""


class Router:
    """Routing state of one gateway; models outside ``models`` are the caller's to refuse."""

    def __init__(self, models: Sequence[DeclaredModel], queue_limit: int) -> None:
        self._queue_limit = queue_limit
        self._caps: dict[str, int] = {}
        self._table: InstanceTable = MappingProxyType({})
        self._inflight: dict[InstanceKey, int] = {}
        self._model_inflight: dict[str, int] = {}
        self._arrivals: dict[str, int] = {}
        self._queues: dict[str, WaitQueue[Instance, Exclude]] = {}
        self.set_models(models)

    @property
    def models(self) -> tuple[str, ...]:
        """The names of the models served now."""
        return tuple(self._caps)

    def set_models(self, models: Sequence[DeclaredModel]) -> None:
        """Serve exactly ``models`` from now on. A new model gets its wait queue; a changed B applies to the
        next pick (and a larger one frees capacity for waiters); a model dropped fails its waiting requests
        at once (``503``, as for a hold that expires) while its requests in flight finish. Its counts are
        kept, so a model that comes back continues them."""
        caps = {m.name: m.max_concurrency for m in models}
        for name in self._caps.keys() - caps.keys():
            self._queues.pop(name).close(ModelDropped(f"the model {name!r} is no longer served"))
        for name in caps.keys() - self._caps.keys():
            self._queues[name] = WaitQueue(self._queue_limit, self.release)
            self._model_inflight.setdefault(name, 0)
            self._arrivals.setdefault(name, 0)
        self._caps = caps
        for name in caps:
            self._hand_out(name)

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
        :class:`~warmserve.gateway.admission.HoldExpired` (:class:`ModelDropped` when the model stopped
        being served) when no instance is had.
        """
        queue = self._queues.get(model)
        if queue is None:  # dropped while this request was being retried
            raise ModelDropped(f"the model {model!r} is no longer served")
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
