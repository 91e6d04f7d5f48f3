"""A simulated universal worker: it converges to the scheduler's desired state with the real worker's
rules (:func:`warmserve.worker.reconcile.converge`) and the timing model's load and promotion times.

Each call of :meth:`SimWorker.reconcile` carries out the steps ``converge`` gives, in its order; a step
that takes time (a load, a promotion) sets a timer through ``schedule`` and the worker reconciles again
when it fires, as the real runtime does when a replica's state changes. A lending change resizes the
instance's KV space; when that moves the end of the instance's current segment, ``segment`` is told.

Weights load from the node's host DRAM cache when the checkpoint is there (loaded on this node recently,
LRU within ``host_cache_bytes``), else from local disk. A serving replica loaded by a policy that starts
engines per replica (``universal=False``: the autoscale and dedicated baselines) also pays the engine
start-up.

Not modelled: disk bandwidth shared by loads running at once on a node, and memory held by a draining
replica the scheduler no longer lists (the scheduler plans as if it were gone, as it does on a cluster).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from warmserve.protocol.state import (
    DesiredReplica,
    DesiredState,
    GpuUsage,
    ModelSpec,
    ObservedReplica,
    ObservedState,
    ReplicaState,
    Role,
    kept_kv_bytes,
    loads_borrowed,
)
from warmserve.sim.instance import SimInstance
from warmserve.worker.pool.base import DEFAULT_CHUNK_BYTES
from warmserve.worker.reconcile import Current, StepKind, converge
from warmserve.worker.timing import GpuProfile, Tier, load_seconds

_OWNING = (ReplicaState.PROMOTING, ReplicaState.SERVING)
#: ``(model spec, KV bytes in all) -> instance``: the simulator builds instances (it owns requests).
InstanceFactory = Callable[[ModelSpec, int], SimInstance]
#: ``(time, worker, replica id, version)``: ask to be called back at ``time`` (a timer), or say when
#: an instance's segment now ends (its version).
Schedule = Callable[[float, str, str, int], None]


@dataclass(eq=False, slots=True)
class SimReplica:
    """One replica's live state on a simulated worker (mutable: the worker owns it)."""

    id: str
    spec: ModelSpec
    gpus: tuple[int, ...]
    state: ReplicaState
    since: float
    busy_until: float = math.inf  # end of the load or promotion in progress
    started: float = 0.0
    lend: int = 0
    instance: SimInstance | None = None
    version: int = 0
    cold: bool = False  # loaded to serve (a cold start), not to prewarm
    borrowed: bool = False  # loaded into KV space a serving replica lent


class SimWorker:
    """One node: ``gpus`` GPUs of ``capacity`` bytes each, a host DRAM cache, replicas."""

    def __init__(
        self,
        name: str,
        gpus: int,
        profile: GpuProfile,
        host_cache_bytes: int,
        universal: bool,
        make_instance: InstanceFactory,
        schedule: Schedule,
        segment: Schedule,
    ) -> None:
        self.name = name
        self.gpu_count = gpus
        self.profile = profile
        self.capacity = profile.memory_bytes
        self.host_cache_bytes = host_cache_bytes
        self.host_cache: OrderedDict[str, int] = OrderedDict()  # model -> bytes, least recent first
        self.universal = universal
        self.make_instance = make_instance
        self.schedule = schedule
        self.segment = segment
        self.desired = DesiredState(name, 0, {}, ())
        self.replicas: dict[str, SimReplica] = {}
        self.changed = True  # serving set changed since the simulator last looked
        self.epoch = 0  # bumped on every replica state change (the scheduler may skip unchanged ticks)
        self.cold_starts = 0
        self.prewarm_hits = 0

    # --- driven by the simulator ------------------------------------------------------------

    def apply(self, desired: DesiredState, now: float) -> None:
        self.desired = desired
        self.reconcile(now)

    def fire(self, rid: str, version: int, now: float) -> None:
        """A timer set for replica ``rid`` fired: its load or promotion is over (if still current)."""
        replica = self.replicas.get(rid)
        if replica is None or replica.version != version:
            return
        if replica.state is ReplicaState.LOADING:
            replica.state, replica.since = ReplicaState.PREWARMED, now
            self._cache(replica.spec)
        elif replica.state is ReplicaState.PROMOTING:
            kv_per_gpu = self.capacity - replica.spec.shard_bytes
            replica.instance = self.make_instance(replica.spec, kv_per_gpu * replica.spec.tensor_parallel)
            replica.state, replica.since = ReplicaState.SERVING, now
            self._set_lending(replica, replica.lend, now)
            self.changed = True
        replica.busy_until = math.inf
        self.epoch += 1
        self.reconcile(now)

    def reconcile(self, now: float) -> None:
        """Carry out what :func:`converge` asks for now; after a drain, converge again at once, as the
        real runtime does, so that a replica drained with nothing in flight is demoted or released now
        (no request will finish later to wake it, and it would hold its GPUs as their owner)."""
        drained = True
        while drained:
            steps = converge(self.desired, self._currents())
            for step in steps:
                self._step(step.kind, step.replica, step.desired, now)
            drained = any(step.kind is StepKind.DRAIN for step in steps)

    def _currents(self) -> list[Current]:
        return [
            Current(
                r.id,
                r.spec.name,
                r.gpus,
                r.state,
                r.instance.inflight if r.instance is not None else 0,
                r.lend,
            )
            for r in self.replicas.values()
        ]

    def _step(self, kind: StepKind, rid: str, want: DesiredReplica | None, now: float) -> None:
        self.epoch += 1
        replica = self.replicas.get(rid)
        if kind is StepKind.LOAD and want is not None:
            self._load(want, now)
            return
        if replica is None:
            return
        if kind in (StepKind.CANCEL_LOAD, StepKind.RELEASE):
            del self.replicas[rid]
            self._return_lent(replica)
            self.changed = True
        elif kind is StepKind.DRAIN:
            replica.state, replica.since = ReplicaState.DRAINING, now
            self._return_lent(replica)  # the scheduler already counts its guests in the free pool
            self.changed = True
        elif kind is StepKind.RESUME:
            replica.state, replica.since = ReplicaState.SERVING, now
            self.changed = True
        elif kind is StepKind.DEMOTE:
            replica.state, replica.since, replica.instance, replica.lend = (
                ReplicaState.PREWARMED,
                now,
                None,
                0,
            )
            replica.cold = False  # its weights stay: promoting it again is a prewarm hit
            self._return_lent(replica)
        elif kind is StepKind.PROMOTE and want is not None:
            replica.state, replica.since, replica.lend = ReplicaState.PROMOTING, now, want.kv_lend_bytes
            replica.borrowed = False  # a promoted replica owns its memory (protocol.loads_borrowed)
            self.prewarm_hits += not replica.cold
            self._timer(replica, now + self.profile.promotion_s)
        elif kind is StepKind.SET_LENDING and want is not None:
            self._set_lending(replica, want.kv_lend_bytes, now)

    def _load(self, want: DesiredReplica, now: float) -> None:
        spec = self.desired.models[want.model]
        tier = Tier.HOST if spec.name in self.host_cache else Tier.DISK
        seconds = load_seconds(spec.weight_bytes, tier, self.profile, spec.tensor_parallel)
        cold = want.role is Role.SERVE
        self.cold_starts += cold
        if cold and not self.universal:
            seconds += self.profile.engine_start_s
        lenders = [o.gpus for o in self.replicas.values() if o.state in _OWNING and o.lend > 0]
        borrowed = loads_borrowed(want.role, want.gpus, lenders)
        replica = SimReplica(
            want.id, spec, want.gpus, ReplicaState.LOADING, now, started=now, cold=cold, borrowed=borrowed
        )
        self.replicas[want.id] = replica
        self._timer(replica, now + seconds)

    def _return_lent(self, owner: SimReplica) -> None:
        """Replicas in ``owner``'s lent space now simply sit in the free pool (it no longer serves)."""
        for r in self.replicas.values():
            if r.borrowed and set(r.gpus) & set(owner.gpus):
                r.borrowed = False

    def _timer(self, replica: SimReplica, at: float) -> None:
        replica.version += 1
        replica.busy_until = at
        self.schedule(at, self.name, replica.id, replica.version)

    def _set_lending(self, replica: SimReplica, lend: int, now: float) -> None:
        """Lend what the scheduler asks (``lend`` is what it asked, as the real worker reports it), but
        never the room for one request of the model's maximum length (``protocol.state.kept_kv_bytes``)."""
        replica.lend = lend
        inst = replica.instance
        if inst is not None:
            spec = replica.spec
            kv_per_gpu = self.capacity - spec.shard_bytes
            kept = kept_kv_bytes(spec, spec.kv_bytes_per_token, DEFAULT_CHUNK_BYTES)
            version = inst.version
            inst.resize(max(kv_per_gpu - min(lend, kv_per_gpu - kept), 0) * spec.tensor_parallel, now)
            if inst.version != version and inst.seg_end < math.inf:
                self.segment(inst.seg_end, self.name, replica.id, inst.version)

    def _cache(self, spec: ModelSpec) -> None:
        self.host_cache.pop(spec.name, None)
        self.host_cache[spec.name] = spec.weight_bytes
        while sum(self.host_cache.values()) > self.host_cache_bytes and len(self.host_cache) > 1:
            self.host_cache.popitem(last=False)

    # --- what the scheduler and the gateway see ------------------------------------------------

    def serving(self) -> list[SimReplica]:
        """Replicas that accept requests now."""
        return [r for r in self.replicas.values() if r.state is ReplicaState.SERVING and r.instance]

    def observed(self, now: float) -> ObservedState:
        """The report the real worker would give at ``now``."""
        used = dict.fromkeys(range(self.gpu_count), 0)
        serve = {d.id for d in self.desired.replicas if d.role is Role.SERVE}
        replicas = []
        for r in self.replicas.values():
            inst = r.instance
            tp = r.spec.tensor_parallel
            # A replica ordered to serve reports the KV region it will own while it still loads: the
            # scheduler may already have ordered it to lend, and a lend above a zero KV size fails its
            # snapshot check (docs/simulator.md, "Workarounds and findings").
            kv_total = self.capacity - r.spec.shard_bytes if inst is not None or r.id in serve else 0
            kv_used = min(inst.kv_used_bytes // tp, kv_total) if inst is not None else 0
            for g in r.gpus:
                used[g] += r.spec.shard_bytes + kv_used
            progress = 1.0
            if r.state is ReplicaState.LOADING and r.busy_until > r.started:
                progress = min(max((now - r.started) / (r.busy_until - r.started), 0.0), 1.0)
            replicas.append(
                ObservedReplica(
                    id=r.id,
                    model=r.spec.name,
                    gpus=r.gpus,
                    state=r.state,
                    since=r.since,
                    progress=progress,
                    inflight=inst.inflight if inst is not None else 0,
                    kv_total_bytes=kv_total,
                    kv_used_bytes=kv_used,
                    borrowed=r.borrowed,
                )
            )
        gpus = tuple(GpuUsage(g, self.capacity, min(u, self.capacity)) for g, u in used.items())
        return ObservedState(self.name, self.desired.generation, True, gpus, tuple(replicas))
