"""One planning step: ``(plan, state) = plan_step(snapshot, state, config)`` — a pure function.

The step runs four phases over a working copy of the cluster (:class:`Occupancy`), each seeing the
decisions of the ones before:

1. *Clean up*: evict failed replicas, and prewarmed replicas left on GPUs a serving replica now owns.
2. *Autoscale* (the reactive layer, :mod:`reactive`): per model, by descending priority, promote a
   prewarmed replica (no weight copy), else cold-start one; demote an idle unprotected instance.
3. *KV reservation* (:mod:`kv_reservation`): each serving replica lends its spare KV space, or takes
   it back, evicting the lowest-score borrowed replicas that no longer fit.
4. *Prewarm* (:mod:`demand`, :mod:`placement`): the replicas the forecasts ask for, greedily in
   descending score, each evicting only lower-score prewarmed replicas; a model whose evicted replica
   is still wanted gets it placed again, lower in the queue.

Applying the plan (:func:`apply_plan`) and planning again at the same instant yields no action. When
nothing fits (no GPU for a cold start, no room for a prewarm) the step plans what it can and says
nothing else: the next tick tries again.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field

from warmserve.operator.planning.kv_reservation import Borrower, KvConfig, lend_change, reclaim_victims
from warmserve.operator.planning.occupancy import Occupancy
from warmserve.operator.planning.placement import (
    PlacementConfig,
    choose_cold,
    choose_prewarm,
    choose_promotion,
)
from warmserve.operator.planning.plan import (
    Action,
    ColdStart,
    Demote,
    Evict,
    LendKV,
    Plan,
    Prewarm,
    Promote,
    ReclaimKV,
    as_prewarmed,
    as_serving,
    replica_id,
)
from warmserve.operator.planning.prewarm_scores import (
    ReplicaDemand,
    ScoreConfig,
    prewarm_order,
    prewarm_scores,
    rank_score,
    replica_demand,
)
from warmserve.operator.planning.reactive import (
    ReactiveConfig,
    ReactiveState,
    observe,
    protect,
    recent_peaks,
    target_instances,
)
from warmserve.operator.planning.snapshot import Replica, Snapshot
from warmserve.protocol.state import ReplicaState, Role, kept_kv_bytes

GIB = float(1 << 30)


@dataclass(frozen=True, slots=True)
class PlannerConfig:
    """Every constant of planning, grouped by the rule it belongs to.

    ``kv_reservation``: whether serving replicas lend spare KV space (off only for the ablation).
    """

    reactive: ReactiveConfig = field(default_factory=ReactiveConfig)
    scores: ScoreConfig = field(default_factory=ScoreConfig)
    kv: KvConfig = field(default_factory=KvConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    kv_reservation: bool = True


def plan_step(
    snapshot: Snapshot, state: ReactiveState, config: PlannerConfig | None = None
) -> tuple[Plan, ReactiveState]:
    """Decide the actions for ``snapshot``; return them with the reactive layer's state for the next tick."""
    config = config or PlannerConfig()
    loads, state = observe(state, snapshot, config.reactive)
    step = _Step(snapshot, Occupancy(snapshot, prewarm_scores(snapshot, config.scores)), config)
    step.clean_up()
    started = step.autoscale(loads, state)
    state = protect(state, started, snapshot.now, config.reactive)
    step.reserve_kv(loads)
    step.prewarm()
    return Plan(tuple(step.actions)), state


class _Step:
    """The running decisions of one step: the working occupancy and the actions taken so far."""

    def __init__(self, snapshot: Snapshot, occ: Occupancy, config: PlannerConfig) -> None:
        self.snapshot = snapshot
        self.occ = occ
        self.config = config
        self.actions: list[Action] = []
        self.taken_ids = {r.id for r in snapshot.replicas}

    # --- shared helpers -----------------------------------------------------------------------

    def evict(self, replica: Replica, reason: str) -> None:
        self.occ.remove(replica.id)
        self.actions.append(Evict(replica.id, replica.model, reason))

    def new_id(self, model: str, worker: str, gpus: tuple[int, ...]) -> str:
        """A readable id, unique among all replicas the snapshot and this step have named."""
        return replica_id(model, worker, gpus, self.taken_ids)

    def instances(self, model: str) -> list[Replica]:
        return [self.occ.replicas[rid] for rid in self.occ.instances[model]]

    def count(self, model: str) -> int:
        """How many instances ``model`` has now."""
        return len(self.occ.instances[model])

    # --- phase 1 ------------------------------------------------------------------------------

    def clean_up(self) -> None:
        for replica in sorted(self.occ.replicas.values(), key=lambda r: r.id):
            if replica.state is ReplicaState.FAILED:
                self.evict(replica, "failed: drop it and free its memory")
        shadowed: dict[str, tuple[Replica, str]] = {}
        for key, owner_id in sorted(self.occ.owner_of.items()):
            for guest in self.occ.guests(key):
                if not guest.borrowed:
                    shadowed.setdefault(guest.id, (guest, f"{owner_id} serves on {key[0]} GPU {key[1]}"))
        for guest, why in shadowed.values():
            self.evict(guest, f"{why}: no room outside its lent KV space")

    # --- phase 2 ------------------------------------------------------------------------------

    def autoscale(self, loads: dict[str, float], state: ReactiveState) -> list[str]:
        """Scale each model to its target, all scale-ins first (they free GPUs), then scale-outs by
        descending model priority; return the ids of the instances started."""
        models = self.snapshot.models
        peaks = recent_peaks(state, self.config.reactive)
        starving = {n for n in models if not self.count(n) and self.snapshot.demand_of(n).total > 0}
        targets = {
            name: target_instances(
                models[name],
                loads[name],
                self.snapshot.demand_of(name),
                self.count(name),
                self.config.reactive,
                peaks[name],
            )
            for name in sorted(models, key=lambda n: (n not in starving, -models[n].priority, n))
        }
        for name, target in targets.items():
            current = self.instances(name)
            if target.instances < len(current):
                self.scale_in(current, len(current) - target.instances, target.reason, state)
        started: list[str] = []
        for name, target in targets.items():
            for _ in range(target.instances - self.count(name)):
                rid = self.scale_out(name, target.reason)
                if rid is None and self.preempt(name, state, None if name in starving else loads, peaks):
                    rid = self.scale_out(name, target.reason)
                if rid is None:
                    break
                started.append(rid)
        return started

    def preempt(
        self, model: str, state: ReactiveState, loads: dict[str, float] | None, peaks: dict[str, float]
    ) -> bool:
        """Make room for ``model``, which needs another instance and has no GPU set to start one: demote
        every serving instance on the aligned set of its size where each of them is the spare instance
        of a model that keeps another one (unprotected; fewest requests in flight first, then a set
        holding a prewarmed replica of ``model``, which is then promoted with no weight copy).

        ``loads`` is ``None`` when ``model`` has requests waiting and no instance: any spare instance
        will do, and so will an idle one (its model has nothing in flight nor queued), even its model's
        only instance and even protected: it keeps its weights prewarmed, and only the scale-in window
        and the protection held its GPU, while the waiting requests would wait them out
        (:meth:`_spare`). Otherwise ``model``'s requests must queue for want of instances
        (:meth:`_queues`), and only instances whose models stayed under their scale-out line without
        them over the whole scale-in window (``peaks``: :func:`recent_peaks`) are taken
        (:meth:`_relieves`).

        Serving replicas are otherwise never moved, so without this a wide model waits for a scale-in
        that busy narrow models may not do for hours; and after a fault that left the GPUs to the wrong
        models (the soak benchmark: the busiest model on one instance at three times its line, a quiet
        one holding two), the busy model waited for the quiet one's scale-in window, 25 s and more, with
        its requests queued. ``False`` when no such set exists."""
        occ, now = self.occ, self.occ.now
        spec = self.snapshot.models[model].spec
        if loads is not None and not self._queues(model, loads[model]):
            return False
        tp = spec.tensor_parallel
        best: tuple[tuple[float, bool, int, int, int], list[Replica]] | None = None
        for windex, worker in enumerate(occ.workers):
            for gpus in occ.blocks(worker, tp):
                owners = sorted({occ.owner_of[k] for g in gpus if (k := (worker.name, g)) in occ.owner_of})
                victims = [occ.replicas[rid] for rid in owners]
                if not victims or not self._spare(victims, state, now, idle=loads is None):
                    continue
                if loads is not None and not self._relieves(victims, peaks):
                    continue
                hosts = any(r.model == model and r.is_prewarm for r in occ.touching(worker.name, gpus))
                key = (sum(v.inflight for v in victims), not hosts, len(victims), windex, gpus[0])
                if best is None or key < best[0]:
                    best = (key, victims)
        if best is None:
            return False
        for victim in best[1]:
            left = self.count(victim.model) - 1
            if loads is None:
                why = f"{model} has requests waiting, no instance and no GPUs: {victim.model} keeps {left}"
            else:
                why = (
                    f"{model} has more load than its instances hold (smoothed load {loads[model]:.2f} on"
                    f" {self.count(model)} instances) with no GPUs: {victim.model} keeps {left}"
                    f" (smoothed load at most {peaks[victim.model]:.2f} over the scale-in window)"
                )
            self.demote(victim, why)
        return True

    def _queues(self, model: str, load: float) -> bool:
        """Whether ``model``'s requests queue for want of instances: its load is more than its instances
        hold (B each; over its scale-out line only, a GPU is not worth a switch) and every one of them
        serves (one still loading is capacity on its way: after a worker restarts, taking for its models
        then took GPUs from models whose own instances were loading too, and gave them back 3 s later)."""
        current = self.instances(model)
        held = self.snapshot.models[model].spec.max_concurrency * len(current)
        return load > held and all(r.state is ReplicaState.SERVING for r in current)

    def _relieves(self, victims: list[Replica], peaks: dict[str, float]) -> bool:
        """Whether each victim's model, left with its other instances, stays under its scale-out line at
        its highest smoothed load over the scale-in window (``peaks``), as scale-in judges it: the GPU
        does not come back at the giver's next rise. (Taking for a model merely over its own line,
        rather than over what its instances hold, moved GPUs back and forth between models whose loads
        wander around that line; judging the giver by its load now, a model briefly quiet after a
        worker's restart gave a GPU to another and took it back 3 s later.)"""
        models, threshold = self.snapshot.models, self.config.reactive.scale_out_threshold
        return all(
            peaks[name] <= threshold * models[name].spec.max_concurrency * (self.count(name) - n)
            for name, n in Counter(v.model for v in victims).items()
        )

    def _spare(self, victims: list[Replica], state: ReactiveState, now: float, idle: bool) -> bool:
        """Whether all of ``victims`` may be demoted at once: serving, and each either unprotected with
        its model left with at least one instance or, with ``idle``, of a model without demand (nothing
        in flight nor queued), protected or not. With more models than GPUs, a model whose requests
        waited took no GPU from idle instances until their scale-in window and protection passed: on a
        28-model, 4-GPU replay, p99 TTFT 8.9 s and 89 % of requests within the SLO with the protection
        kept for idle instances, 1.4 s and 99.7 % without it (docs/planning.md, "No model starves"). An
        idle instance has nothing to drain and keeps its weights prewarmed, so the protection's purpose
        (no GPU handed back while it is used) is not at stake."""
        per_model: dict[str, int] = {}
        for victim in victims:
            if victim.state is not ReplicaState.SERVING:
                return False
            if idle and not self.snapshot.demand_of(victim.model).total:
                continue
            if state.is_protected(victim.id, now):
                return False
            per_model[victim.model] = per_model.get(victim.model, 0) + 1
        return all(self.count(m) > n for m, n in per_model.items())

    def scale_out(self, model: str, reason: str) -> str | None:
        """Promote the best prewarmed replica of ``model``, else cold-start one; ``None`` if neither fits."""
        occ = self.occ
        promotion = choose_promotion(occ, model, self.config.placement)
        if promotion is not None:
            replica = promotion.replica
            for other in promotion.evict:
                self.evict(
                    other, f"promotion of {replica.id} takes {replica.worker} GPUs {list(replica.gpus)}"
                )
            kind = "prewarmed" if replica.state is ReplicaState.PREWARMED else "loading"
            self.actions.append(
                Promote(replica.id, model, f"{reason}: promote {kind} replica, no weight copy")
            )
            occ.update(as_serving(replica, self._kv_total(replica), occ.now))
            return replica.id
        choice = choose_cold(occ, model, self.config.placement)
        if choice is None:
            return None
        for other in choice.evict:
            self.evict(other, f"cold start of {model} takes {choice.worker} GPUs {list(choice.gpus)}")
        rid = self.new_id(model, choice.worker, choice.gpus)
        self.actions.append(
            ColdStart(rid, model, choice.worker, choice.gpus, f"{reason}: no prewarmed replica")
        )
        fresh = Replica(rid, model, choice.worker, choice.gpus, ReplicaState.LOADING, Role.SERVE, occ.now)
        occ.add(as_serving(fresh, self._kv_total(fresh), occ.now))
        return rid

    def _kv_total(self, replica: Replica) -> int:
        return min(self.occ.capacity[(replica.worker, g)] for g in replica.gpus) - self.occ.shard(replica)

    def scale_in(self, current: list[Replica], count: int, reason: str, state: ReactiveState) -> None:
        """Demote up to ``count`` serving, unprotected instances, least loaded first; borrowers stay."""
        now = self.occ.now
        candidates = sorted(
            (r for r in current if r.state is ReplicaState.SERVING and not state.is_protected(r.id, now)),
            key=lambda r: (r.inflight, r.id),
        )
        for replica in candidates[:count]:
            self.demote(replica, f"{reason}: keep its weights prewarmed")

    def demote(self, replica: Replica, reason: str) -> None:
        """Demote a serving instance: its weights stay prewarmed, and the replicas it lent KV space to
        now sit in the free pool (no longer borrowed)."""
        guests = self.occ.touching(replica.worker, replica.gpus)
        self.actions.append(Demote(replica.id, replica.model, reason))
        self.occ.update(as_prewarmed(replica, self.occ.now))
        for guest in guests:
            if guest.borrowed:
                self.occ.change(guest.id, borrowed=False)

    # --- phase 3 ------------------------------------------------------------------------------

    def reserve_kv(self, loads: dict[str, float]) -> None:
        owners = [self.occ.replicas[rid] for rid in sorted(set(self.occ.owner_of.values()))]
        counts: dict[str, int] = {}
        for owner in owners:
            counts[owner.model] = counts.get(owner.model, 0) + 1
        for owner in owners:
            spec = self.snapshot.models[owner.model].spec
            b = spec.max_concurrency
            share = loads.get(owner.model, 0.0) / counts[owner.model]
            lending = self.config.kv_reservation and owner.state is ReplicaState.SERVING
            kept = kept_kv_bytes(spec, spec.kv_bytes_per_token, self.config.kv.chunk_bytes)
            target = lend_change(owner, b, share, self.config.kv, kept) if lending else 0
            if target is None or target == owner.kv_lent_bytes:
                continue
            if target < owner.kv_lent_bytes:
                self._reclaim(owner, target, _lend_why(owner, b, share))
            else:
                why = _lend_why(owner, b, share)
                self.actions.append(
                    LendKV(owner.id, owner.model, target, f"{why}: lend {target / GIB:.2f} GiB")
                )
                self.occ.change(owner.id, kv_lent_bytes=target)

    def _reclaim(self, owner: Replica, target: int, why: str) -> None:
        guests = [g for g in self.occ.touching(owner.worker, owner.gpus) if g.borrowed]
        borrowers = [Borrower(g.id, g.gpus, self.occ.shard(g), self.occ.score(g.id)) for g in guests]
        victims = set(reclaim_victims(borrowers, target))
        for guest in guests:
            if guest.id in victims:
                self.evict(guest, f"{owner.id} reclaims its KV space ({why}); lowest-score borrower first")
        self.actions.append(
            ReclaimKV(owner.id, owner.model, target, f"{why}: lent space down to {target / GIB:.2f} GiB")
        )
        self.occ.change(owner.id, kv_lent_bytes=target)

    # --- phase 4 ------------------------------------------------------------------------------

    def prewarm(self) -> None:
        """Place the prewarmed replicas the forecasts ask for, greedily in descending score."""
        occ, snapshot = self.occ, self.snapshot
        demands = {
            name: replica_demand(snapshot.models[name], f.mean, f.peak, self.count(name))
            for name, f in snapshot.forecasts.items()
        }
        ranks = {name: self._ranked(name) for name in snapshot.models}
        for name in snapshot.models:
            self._rescore(name, ranks[name], demands.get(name))
        queue: list[tuple[float, str]] = []
        for name, demand in demands.items():
            self._enqueue(queue, name, ranks[name], demand)
        blocked: set[str] = set()
        while queue:
            negated, name = heapq.heappop(queue)
            demand, rank = demands[name], len(ranks[name])
            if name in blocked or rank >= demand.total:
                continue
            score = rank_score(snapshot.models[name], demand, rank, self.config.scores)
            if score != -negated:
                heapq.heappush(queue, (-score, name))  # its rank moved since it was queued
                continue
            choice = choose_prewarm(occ, name, score, self.config.placement)
            if choice is None:
                blocked.add(name)
                continue
            reason = self._prewarm_reason(name, demand, rank, score)
            for victim in choice.evict:
                self.evict(
                    victim, f"{reason} needs the room (score {occ.score(victim.id):.3g} < {score:.3g})"
                )
                others = ranks[victim.model]
                others.remove(victim.id)
                self._rescore(victim.model, others, demands.get(victim.model))
                if victim.model in demands:
                    self._enqueue(queue, victim.model, others, demands[victim.model])
            rid = self.new_id(name, choice.worker, choice.gpus)
            where = " in lent KV space" if choice.borrowed else ""
            self.actions.append(
                Prewarm(rid, name, choice.worker, choice.gpus, score, choice.borrowed, reason + where)
            )
            occ.add(
                Replica(
                    rid,
                    name,
                    choice.worker,
                    choice.gpus,
                    ReplicaState.PREWARMED,
                    Role.PREWARM,
                    occ.now,
                    borrowed=choice.borrowed,
                )
            )
            occ.scores[rid] = score
            occ.fresh.add(rid)
            ranks[name].append(rid)
            self._enqueue(queue, name, ranks[name], demand)

    def _ranked(self, model: str) -> list[str]:
        replicas = [self.occ.replicas[rid] for rid in self.occ.of_model[model]]
        return [r.id for r in sorted((r for r in replicas if r.is_prewarm), key=prewarm_order)]

    def _rescore(self, model: str, ranked: list[str], demand: ReplicaDemand | None) -> None:
        spec = self.snapshot.models[model]
        for rank, rid in enumerate(ranked):
            self.occ.scores[rid] = (
                0.0 if demand is None else rank_score(spec, demand, rank, self.config.scores)
            )

    def _enqueue(
        self, queue: list[tuple[float, str]], model: str, ranked: list[str], demand: ReplicaDemand
    ) -> None:
        if len(ranked) < demand.total:
            score = rank_score(self.snapshot.models[model], demand, len(ranked), self.config.scores)
            heapq.heappush(queue, (-score, model))

    def _prewarm_reason(self, model: str, demand: ReplicaDemand, rank: int, score: float) -> str:
        b = self.snapshot.models[model].spec.max_concurrency
        kind = demand.kind(rank)
        figure = (
            f"forecast mean {demand.mean:.3g}" if kind == "foundation" else f"forecast peak {demand.peak:.3g}"
        )
        return (
            f"{kind} replica #{rank + 1} of {model}: {figure} > {demand.instances} instances x B={b}"
            f" (score {score:.3g})"
        )


def _lend_why(owner: Replica, b: int, share: float) -> str:
    """Why an owner's lent KV space changes: its load and KV use (formatted only for an action taken)."""
    return f"load {max(owner.inflight, share):.2f} of B={b}, KV used {owner.kv_used_bytes / GIB:.2f} GiB"
