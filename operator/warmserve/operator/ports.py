"""The scheduler's ports: what it is given, and what each adapter offers it.

The :class:`~warmserve.operator.scheduler.Scheduler` decides; everything around it is an adapter that
plugs into one of these ports, so the same scheduler runs under the local runner, the simulator and the
Kubernetes operator (docs/architecture.md):

- :data:`Policy`: the decision of one step, a pure function (``warmserve.operator.policies``);
- :class:`ForecastSource`: where per-model forecasts come from (learned online, the oracle, none);
- :class:`Observation`: what the scheduler sees at one instant;
- :class:`Cluster`: what a real cluster offers the asynchronous loop
  (:func:`~warmserve.operator.scheduler.run`); the simulator calls
  :meth:`~warmserve.operator.scheduler.Scheduler.tick` itself, at virtual times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from warmserve.operator.planning.plan import Plan
from warmserve.operator.planning.snapshot import Demand, Forecast, Snapshot
from warmserve.protocol.state import DesiredState, ObservedState

#: A policy decides one step: ``(snapshot, its state) -> (plan, its next state)``.
Policy = Callable[[Snapshot, Any], tuple[Plan, Any]]


class ForecastSource(Protocol):
    """Where per-model forecasts come from: learned online, known in advance (oracle), or none."""

    def observe(self, now: float, demand: Mapping[str, Demand]) -> None:
        """Record the demand seen at ``now`` (called every tick before :meth:`forecasts`)."""

    def forecasts(self, now: float) -> Mapping[str, Forecast]:
        """Mean and peak concurrency per model over the coming horizon; absent = no forecast."""


class NoForecast:
    """The reactive-only source (the ``no-forecast`` ablation): never forecasts anything."""

    def observe(self, now: float, demand: Mapping[str, Demand]) -> None:
        return None

    def forecasts(self, now: float) -> Mapping[str, Forecast]:
        return {}


@dataclass(frozen=True, slots=True)
class Observation:
    """What the scheduler sees at ``now``: each worker's report and the gateway's demand per model.

    ``now`` is on the clock of the workers' ``since`` (a replica's age is ``now - since``): epoch seconds
    on a cluster, virtual seconds in the simulator."""

    now: float
    workers: Mapping[str, ObservedState]
    demand: Mapping[str, Demand] = field(default_factory=dict)


class Cluster(Protocol):
    """The port a real cluster offers the scheduler loop (local processes, Kubernetes). Its clock is epoch
    seconds (``time.time()``), the clock workers stamp ``since`` with: an observation's ``now`` is too."""

    async def observe(self) -> Observation:
        """Every worker's observed state and the gateway's demand, now. Raises
        :class:`~warmserve.protocol.errors.UnavailableError` when it cannot observe now (the loop skips
        the tick rather than plan from a partial view)."""

    async def apply(self, desired: Mapping[str, DesiredState]) -> set[str]:
        """Write each worker's desired state; return the names of the workers it could not reach (the
        loop writes to them again at the next tick)."""
