"""The scheduler: observe → decide → act; one object under the operator, the local runner and the simulator.

A :class:`Scheduler` turns one :class:`~warmserve.operator.ports.Observation` (every worker's observed
state and the gateway's demand at time ``now``) into the desired state of every worker. It is synchronous
and does no I/O: adapters own the clock and the wire (its ports are in :mod:`warmserve.operator.ports`).
:func:`run` is the asynchronous loop for real clusters over a :class:`~warmserve.operator.ports.Cluster`;
the simulator calls :meth:`Scheduler.tick` at virtual times. The set of models may change between ticks
(:meth:`Scheduler.set_models`): on a cluster they come and go with their ``ModelDeployment`` resources.

What it remembers between ticks, and why:

- the desired states it last wrote, so that a replica it ordered but no worker reports yet counts as
  loading (the planner would otherwise place it again every tick), and one it dropped but a worker
  still reports (being released) no longer counts;
- the snapshot of the last tick, so that the next one checks only what changed (:meth:`Snapshot.revise`);
- the policy's own state (the reactive layer's smoothing and protection timestamps);
- the forecast source's load history.

On an inconsistent observation (a worker reporting memory over its capacity, say) the snapshot is
refused with a :class:`SnapshotError`. The tick then finds the workers whose reports are refused on their
own, leaves them out (they keep their last desired state, and :attr:`Scheduler.excluded` says which and
why, for logs, metrics and status) and plans the rest, so one worker in a state the snapshot refuses never
stops planning for the others. Only when no worker can be blamed (or every one is) does the tick hold
steady — no new desired state; the error is kept in :attr:`Scheduler.last_error`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from warmserve.operator.planning.desired import desired_states
from warmserve.operator.planning.plan import Plan, apply_plan
from warmserve.operator.planning.prewarm_scores import ScoreConfig
from warmserve.operator.planning.snapshot import (
    Forecast,
    Gpu,
    ModelConfig,
    Replica,
    Snapshot,
    SnapshotError,
    Worker,
)
from warmserve.operator.ports import Cluster, ForecastSource, NoForecast, Observation, Policy
from warmserve.protocol.errors import UnavailableError
from warmserve.protocol.state import (
    DesiredState,
    ObservedReplica,
    ReplicaState,
    Role,
    loads_borrowed,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one tick: the plan (with reasons) and the desired states to write, if any changed;
    the workers left out of it and why; why the tick held steady, if it did."""

    plan: Plan
    desired: Mapping[str, DesiredState]  # empty when nothing changed
    excluded: Mapping[str, str] = field(default_factory=dict)
    held: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick of :func:`run`, for whoever watches the loop: what it saw and decided, or why it was
    skipped (the cluster could not be observed), and how long it took (seconds, writes included)."""

    observation: Observation | None
    decision: Decision | None
    skipped: str = ""
    duration_s: float = 0.0


class Scheduler:
    """Holds what must survive between ticks; :meth:`tick` is the only entry point."""

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        policy: Policy,
        policy_state: Any,
        forecasts: ForecastSource | None = None,
        scores: ScoreConfig | None = None,
    ) -> None:
        """``scores``: the scoring rule the policy plans with, so that the priorities written to the
        workers are the scores the policy ranked replicas by (the registry's ``PolicyEntry.scores``)."""
        self.models: Mapping[str, ModelConfig] = MappingProxyType(dict(models))
        self._prior: tuple[Mapping[str, ModelConfig], Snapshot] | None = None  # see build_snapshot
        self.policy = policy
        self.policy_state = policy_state
        self.forecast_source: ForecastSource = forecasts or NoForecast()
        self.scores = scores or ScoreConfig()
        self.generation = 0
        self.last_desired: dict[str, DesiredState] = {}
        self.last_error = ""
        self.excluded: Mapping[str, str] = {}  # worker -> why its report was left out of the last tick

    @property
    def snapshot(self) -> Snapshot | None:
        """The snapshot the last planned tick decided from (``None`` before the first): the replicas of
        each model by state and role, and the forecasts it planned with, for status reports."""
        return self._prior[1] if self._prior is not None else None

    def set_models(self, models: Mapping[str, ModelConfig]) -> None:
        """Serve ``models`` from the next tick on. A model no longer declared has its replicas left out of
        the next desired states (the workers release them); a new one is planned like any other. The next
        tick builds its snapshot afresh (the previous one was checked against the old models)."""
        self.models = MappingProxyType(dict(models))

    def tick(self, observation: Observation) -> Decision:
        """Plan one step and return the desired states that differ from the last ones written."""
        self.forecast_source.observe(observation.now, observation.demand)
        self.excluded = {}
        self._follow_generations(observation)
        forecasts = self.forecast_source.forecasts(observation.now)
        try:
            return self._decide(observation, forecasts)
        except SnapshotError as exc:
            refused = self._refused_workers(observation, forecasts)
            if refused and len(refused) < len(observation.workers):
                return self._decide_without(observation, forecasts, refused)
            return self._hold(exc)

    def _decide_without(
        self, observation: Observation, forecasts: Mapping[str, Forecast], refused: Mapping[str, str]
    ) -> Decision:
        """Plan with the refused workers' reports left out (they keep their last desired state)."""
        self.excluded = refused
        for name, why in sorted(refused.items()):
            log.warning("scheduler plans without worker %s: %s", name, why)
        kept = {n: w for n, w in observation.workers.items() if n not in refused}
        try:
            return self._decide(Observation(observation.now, kept, observation.demand), forecasts)
        except SnapshotError as exc:
            return self._hold(exc)

    def _follow_generations(self, observation: Observation) -> None:
        """Continue above any generation a worker already applied, and write again to a worker that
        follows a generation this scheduler did not write.

        A restarted scheduler counts from 0 and another writer may have put a higher one; the workers
        refuse every generation under the one they accepted (409), so without this the scheduler would
        be locked out of them for good.
        """
        applied = [w.observed_generation for w in observation.workers.values()]
        self.generation = max([self.generation, *applied])
        for name, report in observation.workers.items():
            ours = self.last_desired.get(name)
            if ours is not None and report.observed_generation > ours.generation:
                del self.last_desired[name]  # rewritten this tick, above the worker's generation

    def _hold(self, exc: SnapshotError) -> Decision:
        self.last_error = str(exc)
        log.warning("scheduler holds steady: %s", exc)
        return Decision(Plan(), {}, held=self.last_error)

    def _refused_workers(self, observation: Observation, forecasts: Mapping[str, Forecast]) -> dict[str, str]:
        """The workers whose report the snapshot refuses on its own, with the reason (the slow path, taken
        only after a refused snapshot)."""
        refused = {}
        for name, state in observation.workers.items():
            alone = Observation(observation.now, {name: state}, observation.demand)
            try:
                build_snapshot(alone, self.models, self.last_desired, forecasts)
            except SnapshotError as exc:
                refused[name] = str(exc)
        return refused

    def _decide(self, observation: Observation, forecasts: Mapping[str, Forecast]) -> Decision:
        prior = self._prior[1] if self._prior is not None and self._prior[0] is self.models else None
        snapshot = build_snapshot(observation, self.models, self.last_desired, forecasts, prior)
        self._prior = (self.models, snapshot)
        plan, next_state = self.policy(snapshot, self.policy_state)
        after = apply_plan(snapshot, plan)
        self.policy_state = next_state
        self.last_error = ""
        wanted = desired_states(after, self.generation + 1, self.scores)
        changed = {name: d for name, d in wanted.items() if not _same(d, self.last_desired.get(name))}
        if changed:
            self.generation += 1
            self.last_desired.update(changed)
        return Decision(plan, changed, excluded=self.excluded)


def _same(new: DesiredState, old: DesiredState | None) -> bool:
    """Equal but for the generation: rewriting an unchanged state would only churn the workers."""
    return old is not None and (new.models, new.replicas) == (old.models, old.replicas)


def build_snapshot(
    observation: Observation,
    models: Mapping[str, ModelConfig],
    last_desired: Mapping[str, DesiredState],
    forecasts: Mapping[str, Forecast],
    prior: Snapshot | None = None,
) -> Snapshot:
    """The planner's snapshot from the workers' reports and the scheduler's own last orders.

    ``prior``: the snapshot built at the previous tick from the same ``models``. Workers and replicas
    equal to its own are taken from it, so that :meth:`Snapshot.revise` checks only what changed (most
    replicas are reported unchanged from one tick to the next).

    Roles come from the last desired state (a worker reports what a replica *is*; only the scheduler
    knows what it was asked to become). A replica of a model no longer declared is left out, so the
    desired state drops it. A replica ordered but not yet reported is loading; it is borrowed when a
    lending owner holds its GPUs, as the worker will flag it when it starts the load (else the planner
    could promote it, and the worker would then report a serving replica flagged borrowed).
    """
    workers: list[Worker] = []
    replicas: list[Replica] = []
    for name, observed in sorted(observation.workers.items()):
        workers.append(Worker(name, tuple(Gpu(g.index, g.capacity_bytes) for g in observed.gpus)))
        ordered = last_desired.get(name)
        roles = {r.id: r for r in ordered.replicas} if ordered is not None else None
        seen = set()
        reported: list[Replica] = []
        for r in observed.replicas:
            seen.add(r.id)
            if r.model in models and (roles is None or r.id in roles):
                want = roles.get(r.id) if roles is not None else None
                reported.append(_replica(name, r, want.role if want else _inferred_role(r), want))
        replicas.extend(reported)
        lent = [r.gpus for r in reported if r.state in _SERVING and r.kv_lent_bytes > 0]
        for want in ordered.replicas if ordered is not None else ():
            if want.id not in seen and want.model in models:
                replicas.append(
                    Replica(
                        id=want.id,
                        model=want.model,
                        worker=name,
                        gpus=want.gpus,
                        state=ReplicaState.LOADING,
                        role=want.role,
                        since=observation.now,
                        progress=0.0,  # ordered, not yet reported: it has no KV space to lend yet
                        borrowed=loads_borrowed(want.role, want.gpus, lent),
                    )
                )
    known_forecasts = {m: f for m, f in forecasts.items() if m in models}
    demand = {m: d for m, d in observation.demand.items() if m in models}
    if prior is None:
        return Snapshot(observation.now, tuple(workers), models, tuple(replicas), known_forecasts, demand)
    by_name = {w.name: w for w in prior.workers}
    by_id = {r.id: r for r in prior.replicas}
    return prior.revise(
        observation.now,
        tuple(_reused(w, by_name.get(w.name)) for w in workers),
        tuple(_reused(r, by_id.get(r.id)) for r in replicas),
        known_forecasts,
        demand,
    )


_T = TypeVar("_T")


def _reused(new: _T, old: _T | None) -> _T:
    """``old`` if it equals ``new``: the object already validated, which :meth:`Snapshot.revise` skips."""
    return old if old is not None and old == new else new


#: Serving or about to: what a restarted scheduler keeps serving, and what a worker's load counts as a lender.
_SERVING = (ReplicaState.PROMOTING, ReplicaState.SERVING)


def _inferred_role(r: ObservedReplica) -> Role:
    """With no order on record (a restarted scheduler): what serves keeps serving."""
    return Role.SERVE if r.state in _SERVING else Role.PREWARM


def _replica(worker: str, r: ObservedReplica, role: Role, want: Any) -> Replica:
    return Replica(
        id=r.id,
        model=r.model,
        worker=worker,
        gpus=r.gpus,
        state=r.state,
        role=role,
        since=r.since,
        progress=r.progress,
        inflight=r.inflight,
        kv_total_bytes=r.kv_total_bytes,
        kv_used_bytes=r.kv_used_bytes,
        # A promoting replica reports no KV space yet: it lends what it has, none.
        kv_lent_bytes=min(want.kv_lend_bytes, r.kv_total_bytes) if want is not None else 0,
        borrowed=r.borrowed,
    )


async def run(
    cluster: Cluster, scheduler: Scheduler, tick_s: float, on_tick: Callable[[Tick], object] | None = None
) -> None:
    """Runs until cancelled: one tick every ``tick_s`` seconds.

    Ticks start on a fixed grid (``tick_s`` apart), not ``tick_s`` after the previous tick's work, so
    the observation and writes over the wire do not stretch the period (the simulator ticks on the same
    grid); a tick that overruns its slot is followed by the next one at once, and the grid starts again
    from there (no burst of ticks to catch up). An observation the cluster cannot make now
    (:class:`UnavailableError`) skips the tick; a desired state that could not be written is written
    again at the next tick (the newest one for that worker), so no order is lost to a worker that was
    briefly away. ``on_tick`` (a benchmark, a status page) sees every tick's :class:`Tick`.
    """
    loop = asyncio.get_running_loop()
    due = loop.time()
    unsent: set[str] = set()
    while True:
        started = loop.time()
        tick = Tick(None, None)
        try:
            observation = await cluster.observe()
            tick = Tick(observation, None)
            decision = scheduler.tick(observation)
            tick = Tick(observation, decision)
            if decision.desired:
                log.info("plan:\n%s", decision.plan.describe())
            names = (unsent | set(decision.desired)) & set(scheduler.last_desired)
            if names:
                unsent = await cluster.apply({n: scheduler.last_desired[n] for n in sorted(names)})
        except UnavailableError as exc:
            log.warning("scheduler tick skipped: %s", exc)
            tick = Tick(tick.observation, tick.decision, skipped=str(exc))
        if on_tick is not None:
            on_tick(Tick(tick.observation, tick.decision, tick.skipped, loop.time() - started))
        due = max(due + tick_s, loop.time())
        await asyncio.sleep(due - loop.time())
