"""The universal worker's runtime: pools per GPU, its replicas, and convergence to a desired state.

The runtime owns one memory pool per GPU and the replicas in them. :meth:`WorkerRuntime.set_desired`
adopts a :class:`DesiredState` that a :class:`~warmserve.worker.desired_feed.DesiredFeed` accepted (the
feed owns the generation rules; :meth:`WorkerRuntime.check_desired` is the worker's own check it runs);
a single convergence task then asks the pure
:func:`~warmserve.worker.reconcile.converge` for steps and carries them out — freeing memory inline,
loading and promoting in background tasks that wake the loop again when they finish. Every state change
is timestamped and counted in the metrics; :meth:`observed` reports the truth at any moment.

Failure behaviour:

- a corrupt or missing checkpoint, or a load that fails, marks that replica ``failed`` with the reason;
  the others are untouched;
- a load that does not fit the pool waits while memory is being freed on its GPUs (a drain, a release in
  flight) and is refused (``failed``, reason "pool exhausted") otherwise — never by taking memory a
  serving replica holds;
- a crash loses the process and its memory: a restarted worker starts empty and says so.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmserve.protocol.errors import InvalidFieldError, InvalidInputError, UnavailableError, WarmServeError
from warmserve.protocol.state import (
    DesiredReplica,
    DesiredState,
    GpuUsage,
    ModelSpec,
    ObservedReplica,
    ObservedState,
    ReplicaState,
    kept_kv_bytes,
    loads_borrowed,
)
from warmserve.worker.engines.base import Engine, Instance, Prepared
from warmserve.worker.layout import align_up
from warmserve.worker.metrics import WorkerMetrics
from warmserve.worker.pool import MemoryPool, PoolError, PoolExhaustedError, Slot, create_pool
from warmserve.worker.reconcile import Current, Step, StepKind, converge
from warmserve.worker.store import Checkpoint, CorruptModelError, LoadState, ModelStore

if TYPE_CHECKING:  # annotations only: a fake-GPU worker runs without torch
    import torch

log = logging.getLogger(__name__)

#: How often a running load reports progress (and notices cancellation), in seconds.
PROGRESS_INTERVAL_S = 0.02


class ModelNotServedError(InvalidInputError):
    """No replica of the model (or no replica with that id) on this worker: answered with 404."""


class ReplicaUnavailableError(UnavailableError):
    """The replica exists but cannot take a request now (not serving, or at its cap B): 503."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker is set up; validated by :meth:`check` before anything is allocated."""

    name: str
    gpus: int
    gpu_memory_bytes: int
    pool_backend: str = "fake"  # fake | host | cuda
    chunk_bytes: int = 2 * 1024 * 1024
    store_root: Path | None = None  # the node-local weight cache; needed by the host and cuda pools
    endpoint: str = ""  # base URL of this worker's HTTP server, reported for serving replicas

    def check(self) -> None:
        if not self.name:
            raise InvalidFieldError("name", "a non-empty worker name", self.name)
        if self.gpus < 1:
            raise InvalidFieldError("gpus", "an integer >= 1", self.gpus)
        if self.gpu_memory_bytes < self.chunk_bytes:
            raise InvalidFieldError(
                "gpu_memory_bytes", f">= one chunk ({self.chunk_bytes} bytes)", self.gpu_memory_bytes
            )
        if self.pool_backend != "fake" and self.store_root is None:
            raise InvalidFieldError(
                "store_root", f"a model store directory for the {self.pool_backend} pool", None
            )


@dataclass
class _Replica:
    """One replica's mutable record; only the runtime's event loop touches it."""

    id: str
    spec: ModelSpec
    gpus: tuple[int, ...]
    state: ReplicaState
    since: float
    slots: list[Slot] = field(default_factory=list)
    weight_bytes: int = 0  # mapped per GPU, from offset 0
    kv_bytes: int = 0  # mapped per GPU, after the weights
    kv_space: int = 0  # per GPU while serving: the mapped KV plus what is lent
    progress: float = 0.0
    reason: str = ""
    kv_lend_bytes: int = 0  # lent per GPU now (whole chunks)
    kv_lend_wanted: int = 0  # what the desired state asks to lend
    borrowed: bool = False  # loaded into KV space a serving replica lends
    prepared: Prepared | None = None
    instance: Instance | None = None
    task: asyncio.Task[None] | None = None
    cancelling: bool = False  # its load was cancelled; its memory is freed once the copy has stopped

    @property
    def kv_offset(self) -> int:
        return align_up(self.weight_bytes, self.slots[0].pool.chunk_bytes) if self.slots else 0


class WorkerRuntime:
    """Holds the pools and replicas of one worker and converges them to the desired state."""

    def __init__(self, config: WorkerConfig, engine: Engine, metrics: WorkerMetrics | None = None) -> None:
        config.check()
        self.config = config
        self.engine = engine
        self.metrics = metrics or WorkerMetrics()
        self.store = ModelStore(config.store_root) if config.store_root is not None else None
        self.pools: list[MemoryPool] = [
            create_pool(config.pool_backend, config.gpu_memory_bytes, config.chunk_bytes, device=i)
            for i in range(config.gpus)
        ]
        self._replicas: dict[str, _Replica] = {}
        self._desired: DesiredState | None = None
        self._applied_generation = -1
        self._error = ""
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the convergence loop on the running event loop."""
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._converge_forever())

    async def close(self) -> None:
        """Stop converging, cancel loads, drop every replica and give the pools' memory back."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for r in list(self._replicas.values()):
            await self._cancel_task(r)
            try:
                await self._release(r)  # a serving instance is closed first: its KV views go with it
            except Exception:  # e.g. an engine that cannot demote here: drop it all the same
                log.exception("replica %s: release on close failed", r.id)
                self._drop(r)
        for pool in self.pools:
            pool.close()

    # --- desired state ---------------------------------------------------------------------------

    def check_desired(self, desired: DesiredState) -> None:
        """Refuse (:class:`InvalidFieldError` naming the field) a state this worker cannot carry out.

        The feed has checked the document's form and that it names this worker; this adds what only the
        runtime knows (its GPU count).
        """
        bad = [(i, g) for i, r in enumerate(desired.replicas) for g in r.gpus if g >= self.config.gpus]
        if bad:
            i, g = bad[0]
            raise InvalidFieldError(f"replicas[{i}].gpus", f"GPU indices below {self.config.gpus}", g)

    def set_desired(self, desired: DesiredState) -> None:
        """Adopt a desired state the feed accepted (its generation rules decide order; none here)."""
        self.check_desired(desired)
        self._desired = desired
        self._error = ""
        self._wake.set()

    def reject(self, error: str) -> None:
        """Record why a desired-state document was refused; it is reported until a valid one arrives."""
        self._error = error
        self.metrics.desired_rejected.inc()

    # --- requests --------------------------------------------------------------------------------

    def acquire(self, model: str, replica_id: str | None = None) -> Instance:
        """The least-loaded serving instance of ``model`` (or exactly ``replica_id``) below its cap B."""
        candidates = [
            r
            for r in self._replicas.values()
            if r.spec.name == model and (replica_id is None or r.id == replica_id)
        ]
        if not candidates:
            what = f"replica {replica_id!r} of " if replica_id else ""
            raise ModelNotServedError(f"no {what}model {model!r} on worker {self.config.name!r}")
        ready = [
            r.instance
            for r in candidates
            if r.state is ReplicaState.SERVING
            and r.instance is not None
            and r.instance.inflight < r.spec.max_concurrency
        ]
        if not ready:
            states = sorted({r.state.value for r in candidates})
            raise ReplicaUnavailableError(
                f"model {model!r} is {'/'.join(states)} here, or at its concurrency cap"
            )
        return min(ready, key=lambda i: i.inflight)

    def request_finished(self) -> None:
        """Called when a request ends, so that a drained replica can be demoted at once."""
        if any(r.state is ReplicaState.DRAINING for r in self._replicas.values()):
            self._wake.set()

    def served_models(self) -> list[str]:
        return sorted({r.spec.name for r in self._replicas.values() if r.state is ReplicaState.SERVING})

    # --- observed state --------------------------------------------------------------------------

    def observed(self) -> ObservedState:
        """The truth now: pool use per GPU and every replica with its state and progress."""
        lent = [0] * len(self.pools)
        for r in self._replicas.values():
            if r.state is ReplicaState.SERVING:
                for g in r.gpus:
                    lent[g] += r.kv_lend_bytes
        gpus = tuple(
            GpuUsage(index=i, capacity_bytes=p.capacity_bytes, used_bytes=p.used_bytes, lent_bytes=lent[i])
            for i, p in enumerate(self.pools)
        )
        for usage in gpus:
            label = str(usage.index)
            self.metrics.pool_used.labels(label).set(usage.used_bytes)
            self.metrics.pool_free.labels(label).set(usage.capacity_bytes - usage.used_bytes)
            self.metrics.pool_lent.labels(label).set(usage.lent_bytes)
        return ObservedState(
            worker=self.config.name,
            observed_generation=self._applied_generation,
            ready=True,
            gpus=gpus,
            replicas=tuple(self._observe(r) for r in self._replicas.values()),
            endpoint=self.config.endpoint,
            error=self._error,
        )

    def _observe(self, r: _Replica) -> ObservedReplica:
        inst = r.instance
        return ObservedReplica(
            id=r.id,
            model=r.spec.name,
            gpus=r.gpus,
            state=r.state,
            since=r.since,
            progress=min(max(r.progress, 0.0), 1.0),
            inflight=inst.inflight if inst else 0,
            kv_total_bytes=r.kv_space if inst else 0,  # the planner's KV space: mapped plus lent
            kv_used_bytes=inst.kv_used_bytes // len(r.gpus) if inst else 0,
            borrowed=r.borrowed,
            endpoint=self.config.endpoint if r.state is ReplicaState.SERVING else "",
            reason=r.reason,
        )

    # --- convergence -----------------------------------------------------------------------------

    async def _converge_forever(self) -> None:
        """Runs until cancelled: wait for a change, then carry out the steps towards the desired state."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            desired = self._desired
            if desired is None:
                continue
            try:
                steps = converge(desired, self._currents())
                for step in steps:
                    self._carry_out(step, desired)
            except Exception:  # a bug must not kill the worker's only convergence loop
                log.exception("convergence step failed; retrying on the next change")
            self._mark_applied(desired)

    def _mark_applied(self, desired: DesiredState) -> None:
        """Report ``desired`` applied once nothing is left to do for it. Checked again after the steps just
        carried out, because steps that finish at once (lending, a release) start no task whose end would
        wake the loop: without this the worker served the new state but went on reporting the old
        generation until some later change."""
        busy = any(r.task is not None for r in self._replicas.values())
        if not busy and not converge(desired, self._currents()):
            self._applied_generation = desired.generation

    def _currents(self) -> list[Current]:
        return [
            Current(
                id=r.id,
                model=r.spec.name,
                gpus=r.gpus,
                state=r.state,
                inflight=r.instance.inflight if r.instance else 0,
                # Until the wanted lending is in place (it may wait for memory), converge asks again.
                kv_lend_bytes=r.kv_lend_wanted if self._lent_as_wanted(r) else r.kv_lend_bytes,
            )
            for r in self._replicas.values()
            if r.task is None or r.state is ReplicaState.LOADING  # a loading replica can still be cancelled
        ]

    def _carry_out(self, step: Step, desired: DesiredState) -> None:
        r = self._replicas.get(step.replica)
        if step.kind is StepKind.LOAD and step.desired is not None:
            self._start_load(step.desired, desired.models[step.desired.model])
        elif r is None:
            return
        elif step.kind is StepKind.CANCEL_LOAD and r.task is not None:
            r.cancelling = True  # a load waiting for this memory waits for it (_memory_being_freed)
            r.task.cancel()  # the load drops the replica once its copy thread has stopped
        elif step.kind is StepKind.RELEASE:
            self._spawn(r, self._release(r))
        elif step.kind is StepKind.DRAIN:
            self._transition(r, ReplicaState.DRAINING)
            self._wake.set()  # an idle replica drains at once
        elif step.kind is StepKind.RESUME:
            self._transition(r, ReplicaState.SERVING)
        elif step.kind is StepKind.DEMOTE:
            self._spawn(r, self._demote(r))
        elif step.kind is StepKind.PROMOTE and step.desired is not None:
            r.kv_lend_wanted = step.desired.kv_lend_bytes
            if self._kv_room_short(r) and self._memory_being_freed(r.gpus):
                return  # the neighbours' release wakes the loop, and the promotion is tried again
            self._spawn(r, self._promote(r))
        elif step.kind is StepKind.SET_LENDING and step.desired is not None:
            r.kv_lend_wanted = step.desired.kv_lend_bytes
            self._relend(r)

    def _spawn(self, r: _Replica, work: Coroutine[Any, Any, None]) -> None:
        """Run one replica's long step in the background; a failure fails that replica only."""

        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except WarmServeError as exc:  # bad spec, corrupt weights, no memory: said in the reason
                log.warning("replica %s failed: %s", r.id, exc)
                self._fail(r, str(exc))
            except Exception as exc:  # a bug: the replica fails, the worker goes on
                log.exception("replica %s failed", r.id)
                self._fail(r, f"{type(exc).__name__}: {exc}")
            finally:
                r.task = None
                self._wake.set()

        r.task = asyncio.get_running_loop().create_task(run())

    # --- steps -----------------------------------------------------------------------------------

    def _start_load(self, want: DesiredReplica, spec: ModelSpec) -> None:
        """Map the weights' memory and start the copy; wait if memory is being freed, else refuse."""
        r = _Replica(id=want.id, spec=spec, gpus=want.gpus, state=ReplicaState.LOADING, since=time.time())
        r.kv_lend_wanted = want.kv_lend_bytes
        # Memory beside a serving replica is its lent KV, if it lends any (an engine holding a view of its
        # whole KV region, torch, lends nothing: then the memory is the pool's own).
        lenders = [
            o.gpus
            for o in self._replicas.values()
            if o.state in (ReplicaState.PROMOTING, ReplicaState.SERVING) and o.kv_lend_bytes > 0
        ]
        r.borrowed = loads_borrowed(want.role, want.gpus, lenders)
        try:
            checkpoint = self._checkpoint(spec)
        except WarmServeError as exc:  # corrupt or missing checkpoint, or shards we cannot cut
            self._fail(r, str(exc))
            return
        r.weight_bytes = checkpoint.total_bytes if checkpoint is not None else spec.shard_bytes
        pools = [self.pools[g] for g in r.gpus]
        if any(p.free_bytes < align_up(r.weight_bytes, p.chunk_bytes) for p in pools):
            if not self._memory_being_freed(r.gpus):
                free = min(p.free_bytes for p in pools)
                self._fail(r, f"pool exhausted: needs {r.weight_bytes} bytes per GPU, {free} free")
            return  # else the drain or release in flight wakes the loop, and the load is tried again
        for pool in pools:
            slot = pool.create_slot()
            r.slots.append(slot)
            pool.map(slot, 0, r.weight_bytes)
        self._replicas[r.id] = r
        self.metrics.transitions.labels(spec.name, "absent", ReplicaState.LOADING.value).inc()
        self._spawn(r, self._load(r, checkpoint))

    async def _load(self, r: _Replica, checkpoint: Checkpoint | None) -> None:
        started = time.monotonic()
        weights = None
        try:
            if checkpoint is not None:
                await self._copy_from_store(r, checkpoint)
            weights = r.slots[0].view(0, r.weight_bytes) if checkpoint is not None else None
            layout = checkpoint.layout if checkpoint is not None else None
            # With no weights (fake-GPU mode) the engine itself plays the load time of the timing model.
            # The engine reads config and tokenizer from the checkpoint the store resolved under its root.
            spec = replace(r.spec, weights=str(checkpoint.path)) if checkpoint is not None else r.spec
            r.prepared = await self.engine.prepare(spec, weights, layout)
        except asyncio.CancelledError:
            # Cancelled because it is no longer wanted, while copying or while the engine prepares (where
            # a fake-GPU load spends all its time): the view goes first, then the replica and its memory.
            weights = None
            self._drop(r)
            raise
        del weights
        self.metrics.load_seconds.labels(r.spec.name).observe(time.monotonic() - started)
        r.progress = 1.0
        self._transition(r, ReplicaState.PREWARMED)

    def _checkpoint(self, spec: ModelSpec) -> Checkpoint | None:
        """The checkpoint to copy (structure checked), or None on a fake-GPU worker with no store."""
        if self.store is None:
            return None
        if spec.tensor_parallel != 1:
            raise InvalidFieldError(
                f"models.{spec.name}.tensor_parallel",
                "1 on a worker with real weights (the store does not cut shards)",
                spec.tensor_parallel,
            )
        return self.store.inspect(spec.weights)

    def _memory_being_freed(self, gpus: Sequence[int]) -> bool:
        """True if a replica on these GPUs is draining, has a release or demotion in flight, or is a
        cancelled load not yet stopped (a new load on its memory in the same pass must wait, not fail)."""
        return any(
            (
                o.state is ReplicaState.DRAINING
                or (o.task is not None and (o.state is not ReplicaState.LOADING or o.cancelling))
            )
            and set(o.gpus) & set(gpus)
            for o in self._replicas.values()
        )

    async def _copy_from_store(self, r: _Replica, checkpoint: Checkpoint) -> None:
        """Copy the weights in a background thread; a failed copy raises with the store's reason."""
        assert self.store is not None
        task = self.store.load(checkpoint, r.slots[0])
        try:
            while (progress := task.progress()).state is LoadState.RUNNING:
                r.progress = progress.fraction
                await asyncio.sleep(PROGRESS_INTERVAL_S)
        finally:
            task.cancel()  # no effect once it ended; on our cancellation, stop the copy before the slot goes
            progress = await asyncio.to_thread(task.wait)
        if progress.state is LoadState.FAILED:
            raise CorruptModelError(r.spec.name, progress.reason)

    async def _promote(self, r: _Replica) -> None:
        assert r.prepared is not None
        started = time.monotonic()
        r.borrowed = False  # a promoted replica owns its memory (protocol.loads_borrowed)
        self._transition(r, ReplicaState.PROMOTING)
        chunk = self._chunk(r)
        room = min(self._kv_room(r, slot) for slot in r.slots)
        if room < self._kept(r):  # room for one request of the model's maximum length, else refused
            raise PoolExhaustedError(self._kept(r) // chunk, room // chunk, chunk)
        # The KV space is everything the weights leave (as the scheduler counts it); what other replicas
        # on these GPUs hold is lent from the start, so they become its guests.
        r.kv_space = min(slot.pool.capacity_bytes - r.kv_offset for slot in r.slots) // chunk * chunk
        r.kv_lend_bytes = max(self._lendable(r), r.kv_space - room)
        self._start_lending(r)
        kv_bytes = r.kv_space - r.kv_lend_bytes
        for slot in r.slots:
            slot.pool.map(slot, r.kv_offset, kv_bytes)
        r.kv_bytes = kv_bytes
        kv = self._kv_view(r)
        r.instance = await self.engine.promote(r.prepared, kv, kv_bytes * len(r.gpus))
        del kv
        self.metrics.promotion_seconds.labels(r.spec.name).observe(time.monotonic() - started)
        self._transition(r, ReplicaState.SERVING)

    def _kv_room_short(self, r: _Replica) -> bool:
        """Whether promoting ``r`` now would leave it less KV space than it never lends."""
        return min(self._kv_room(r, slot) for slot in r.slots) < self._kept(r)

    def _kv_room(self, r: _Replica, slot: Slot) -> int:
        """The KV space a promotion can map now in one slot: the pool's free memory after the weights."""
        pool = slot.pool
        room = min(pool.free_bytes, pool.capacity_bytes - r.kv_offset)
        return room // pool.chunk_bytes * pool.chunk_bytes

    def _lendable(self, r: _Replica) -> int:
        """The wanted lending in whole chunks (rounded up), always leaving the instance room for one
        request of the model's maximum length (``protocol.state.kept_kv_bytes``)."""
        return max(0, min(align_up(r.kv_lend_wanted, self._chunk(r)), r.kv_space - self._kept(r)))

    def _chunk(self, r: _Replica) -> int:
        return r.slots[0].pool.chunk_bytes

    def _kept(self, r: _Replica) -> int:
        """Per-GPU KV bytes ``r`` never lends while it serves."""
        assert r.prepared is not None
        return kept_kv_bytes(r.spec, r.prepared.kv_bytes_per_token, self._chunk(r))

    def _lent_as_wanted(self, r: _Replica) -> bool:
        return r.instance is None or r.kv_lend_bytes == self._lendable(r)

    def _relend(self, r: _Replica) -> None:
        """Lend more of a live instance's KV space to the pool, or take some back.

        Lending unmaps the top of the KV region once the engine agrees to use less (it refuses while
        admitted sequences use that space: the lending then waits for the next change). Taking back maps
        the chunks again, which the pool can do once the borrowed replicas there are gone (the desired
        state drops them first; until then this waits as well). Nothing a running request uses is lent.
        """
        if r.instance is None or r.state is not ReplicaState.SERVING:
            return
        lend = self._lendable(r)
        mapped = r.kv_space - lend
        tp = len(r.gpus)
        if mapped < r.kv_bytes:
            if not r.instance.resize_kv(mapped * tp):
                return
            try:
                for slot in r.slots:
                    slot.pool.unmap(slot, r.kv_offset + mapped, r.kv_bytes - mapped)
            except PoolError as exc:  # the engine holds a view of the whole region (torch): keep it all
                log.info("replica %s cannot lend KV while serving: %s", r.id, exc)
                r.instance.resize_kv(r.kv_bytes * tp)
                return
        elif mapped > r.kv_bytes:
            try:
                for slot in r.slots:
                    slot.pool.map(slot, r.kv_offset + r.kv_bytes, mapped - r.kv_bytes)
            except PoolExhaustedError:
                return  # the borrowed replicas are still being released; their release wakes us again
            r.instance.resize_kv(mapped * tp)
        r.kv_bytes = mapped
        r.kv_lend_bytes = lend

    def _kv_view(self, r: _Replica) -> torch.Tensor | None:
        if self.store is None:
            return None
        return r.slots[0].view(r.kv_offset, r.kv_bytes)

    async def _demote(self, r: _Replica) -> None:
        assert r.instance is not None
        r.prepared = await self.engine.demote(r.instance)
        r.instance = None
        self._unmap_kv(r)
        self._transition(r, ReplicaState.PREWARMED)

    def _unmap_kv(self, r: _Replica) -> None:
        if r.kv_bytes:
            gc.collect()  # the engine's KV tensors were views of the slot: let them go first
            for slot in r.slots:
                slot.pool.unmap(slot, r.kv_offset, r.kv_bytes)
            self._stop_lending(r)
            r.kv_bytes = r.kv_space = r.kv_lend_bytes = 0

    def _start_lending(self, lender: _Replica) -> None:
        """``lender`` is promoted over replicas already on its GPUs: their memory is part of its KV space
        that it lends, so they are borrowed (the scheduler evicts them when it takes the space back).

        Counting the KV space as only the memory left free beside them, as before, made a promoted
        replica lend the scheduler's share on top of what they hold: it kept one chunk of KV and refused
        every request of more than a few tokens.
        """
        if lender.kv_lend_bytes:
            for o in self._replicas.values():
                if (
                    o is not lender
                    and o.state is not ReplicaState.SERVING
                    and set(o.gpus) <= set(lender.gpus)
                ):
                    o.borrowed = True

    def _stop_lending(self, lender: _Replica) -> None:
        """``lender`` no longer serves: replicas loaded into its lent KV now sit in plain pool memory.

        Still reported ``borrowed``, they would contradict the report (borrowed with no serving replica
        on their GPUs), and the scheduler refuses such a snapshot.
        """
        if lender.kv_space:
            for o in self._replicas.values():
                if o.borrowed and set(o.gpus) & set(lender.gpus):
                    o.borrowed = False

    async def _release(self, r: _Replica) -> None:
        if r.instance is not None:
            await self.engine.demote(r.instance)
        self._drop(r)
        self.metrics.transitions.labels(r.spec.name, r.state.value, "absent").inc()

    async def _cancel_task(self, r: _Replica) -> None:
        if r.task is not None:
            r.task.cancel()
            await asyncio.gather(r.task, return_exceptions=True)

    def _drop(self, r: _Replica) -> None:
        """Forget the replica and give its memory back."""
        self._free_memory(r)
        self._replicas.pop(r.id, None)

    def _free_memory(self, r: _Replica) -> None:
        """Release the replica's slots: engine objects (views of the slot) go first, or the pool refuses."""
        r.instance = None
        r.prepared = None
        self._stop_lending(r)
        gc.collect()
        for slot in r.slots:
            try:
                slot.pool.release_slot(slot)
            except PoolError:
                log.exception("replica %s: slot %d could not be released", r.id, slot.id)
        r.slots.clear()
        r.weight_bytes = r.kv_bytes = r.kv_space = r.kv_lend_bytes = 0

    def _fail(self, r: _Replica, reason: str) -> None:
        """Mark a replica failed with its reason, keeping no memory."""
        self._free_memory(r)
        r.reason = reason
        self._replicas[r.id] = r
        self._transition(r, ReplicaState.FAILED)

    def _transition(self, r: _Replica, state: ReplicaState) -> None:
        self.metrics.transitions.labels(r.spec.name, r.state.value, state.value).inc()
        log.info("replica %s (%s): %s -> %s", r.id, r.spec.name, r.state.value, state.value)
        r.state = state
        r.since = time.time()
