"""Who sits on which GPU, indexed for placement: the planner's working copy during one step.

A planning step starts from an immutable :class:`Snapshot` and decides actions one after another;
each decision must see the previous ones (a GPU taken by a cold start is no longer idle). This class
is that running state, private to one step and never shared: per GPU, the replicas on it, the bytes
their weights use, the serving owner and the models present; per worker, the GPU-set bitmasks of its
replicas (for the laminar check); per prewarmed replica, its current score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from warmserve.operator.planning.snapshot import ModelConfig, Replica, Snapshot, Worker
from warmserve.protocol.state import ReplicaState

GpuKey = tuple[str, int]  # (worker name, GPU index)


def gpu_mask(gpus: Iterable[int]) -> int:
    """The GPU set as a bitmask (bit i = GPU index i), for cheap nesting and overlap tests."""
    mask = 0
    for gpu in gpus:
        mask |= 1 << gpu
    return mask


def is_laminar_with(mask: int, masks: Iterable[int]) -> bool:
    """Whether the set ``mask`` is nested in or disjoint from every set of ``masks``."""
    return all((m & mask) in (0, m, mask) for m in masks)


@dataclass(frozen=True, slots=True)
class Site:
    """A candidate GPU set for prewarming: its worker (and that worker's position) and, if the GPUs
    serve, the serving replica whose lent KV space it would borrow."""

    windex: int
    worker: str
    gpus: tuple[int, ...]
    lender: Replica | None

    def __init__(self, windex: int, worker: str, gpus: tuple[int, ...], lender: Replica | None) -> None:
        # written out: see snapshot.Replica.__init__
        object.__setattr__(self, "windex", windex)
        object.__setattr__(self, "worker", worker)
        object.__setattr__(self, "gpus", gpus)
        object.__setattr__(self, "lender", lender)


def _same_owner(
    owner_of: Mapping[GpuKey, str], worker: str, gpus: tuple[int, ...], owner: str | None
) -> bool:
    """Whether every GPU of ``gpus`` on ``worker`` has ``owner`` (None: none of them is owned).

    A plain loop: ``all()`` over a generator costs about twice as much on this per-tick path."""
    for gpu in gpus:  # noqa: SIM110
        if owner_of.get((worker, gpu)) != owner:
            return False
    return True


def _lends(replica: Replica) -> bool:
    return replica.state is ReplicaState.SERVING and replica.kv_lent_bytes > 0


class Occupancy:
    """Mutable placement index over one snapshot's workers; every change goes through add/remove/update."""

    def __init__(self, snapshot: Snapshot, scores: Mapping[str, float]) -> None:
        self.now = snapshot.now
        self.models: Mapping[str, ModelConfig] = snapshot.models
        self._shards = {name: model.spec.shard_bytes for name, model in snapshot.models.items()}
        self.workers: tuple[Worker, ...] = snapshot.workers
        self._by_name = {w.name: w for w in snapshot.workers}
        self.widest = max((m.spec.tensor_parallel for m in snapshot.models.values()), default=1)
        self.replicas: dict[str, Replica] = {}
        self.scores: dict[str, float] = dict(scores)
        self.capacity: dict[GpuKey, int] = {}
        self.on_gpu: dict[GpuKey, list[str]] = {}
        self.used: dict[GpuKey, int] = {}  # weight bytes of every replica on the GPU
        self.borrowed_used: dict[GpuKey, int] = {}  # weight bytes of replicas in lent KV space
        self.owner_of: dict[GpuKey, str] = {}
        self.models_on: dict[GpuKey, set[str]] = {}
        self.masks: dict[str, Counter[int]] = {w.name: Counter() for w in snapshot.workers}
        self.of_model: dict[str, set[str]] = {name: set() for name in snapshot.models}
        self.instances: dict[str, set[str]] = {name: set() for name in snapshot.models}  # is_instance ones
        self.fresh: set[str] = set()  # replicas placed during this step: never evicted in it
        self._blocks: dict[tuple[str, int], tuple[tuple[int, ...], ...]] = {}
        self._sites: dict[tuple[str, int], list[Site]] = {}  # by worker and set size, see sites()
        for worker in snapshot.workers:
            for gpu in worker.gpus:
                key = (worker.name, gpu.index)
                self.capacity[key] = gpu.capacity_bytes
                self.on_gpu[key] = []
                self.used[key] = 0
                self.borrowed_used[key] = 0
                self.models_on[key] = set()
        for replica in snapshot.replicas:
            self.add(replica)

    def blocks(self, worker: Worker, size: int) -> tuple[tuple[int, ...], ...]:
        """Candidate GPU sets of ``size`` on ``worker``: aligned blocks of its GPUs in index order.

        Aligned blocks of one power-of-two size nest in or avoid those of another, so placing only on
        them keeps the GPU sets a laminar family by construction (the explicit check stays, for other
        sizes and for sets observed in the snapshot). GPUs past the last whole block are not used by
        replicas of that size.
        """
        cached = self._blocks.get((worker.name, size))
        if cached is None:
            indices = sorted(g.index for g in worker.gpus)
            cached = tuple(tuple(indices[i : i + size]) for i in range(0, len(indices) - size + 1, size))
            self._blocks[(worker.name, size)] = cached
        return cached

    def sites(self, size: int) -> Iterator[Site]:
        """The blocks of ``size`` where a replica may go at all, in worker then GPU order: all idle
        GPUs (``lender`` None), or all inside one serving replica that lends KV space. Cached per
        worker until an owner there comes, goes or changes its lending (never during prewarm
        placement), so a scan visits no GPU busy serving without lending."""
        for windex, worker in enumerate(self.workers):
            cached = self._sites.get((worker.name, size))
            if cached is None:
                cached = self._sites[(worker.name, size)] = self._worker_sites(windex, worker, size)
            yield from cached

    def _worker_sites(self, windex: int, worker: Worker, size: int) -> list[Site]:
        if len(worker.gpus) < size:
            return []
        found = []
        owner_of, name = self.owner_of, worker.name
        for gpus in self.blocks(worker, size):
            owner = owner_of.get((name, gpus[0]))
            if _same_owner(owner_of, name, gpus, owner):  # all idle, or all one replica's
                lender = None if owner is None else self.replicas[owner]
                if lender is None or _lends(lender):
                    found.append(Site(windex, name, gpus, lender))
        return found

    def _forget_sites(self, worker: str) -> None:
        for key in [k for k in self._sites if k[0] == worker]:
            del self._sites[key]

    def breaks_block(self, worker: str, gpus: tuple[int, ...]) -> bool:
        """Whether a serving replica on ``gpus`` would be the first owner in the aligned block of the
        widest declared tensor parallelism around them.

        Such a block is where a replica of the widest model can still be started or promoted (owners
        are never evicted to make room); owners of narrower models packed into blocks that already
        have one keep it so, instead of fragmenting every block and starving the widest model.
        """
        if len(gpus) >= self.widest:
            return False
        for block in self.blocks(self._by_name[worker], self.widest):
            if gpus[0] in block:
                return not any((worker, g) in self.owner_of for g in block)
        return False

    def shard(self, replica: Replica) -> int:
        return self._shards[replica.model]

    def add(self, replica: Replica) -> None:
        self.replicas[replica.id] = replica
        self.of_model[replica.model].add(replica.id)
        if replica.is_instance:
            self.instances[replica.model].add(replica.id)
        shard = self._shards[replica.model]
        owner = replica.is_owner
        self.masks[replica.worker][gpu_mask(replica.gpus)] += 1
        for gpu in replica.gpus:
            key = (replica.worker, gpu)
            self.on_gpu[key].append(replica.id)
            self.used[key] += shard
            self.models_on[key].add(replica.model)
            if replica.borrowed:
                self.borrowed_used[key] += shard
            if owner:
                self.owner_of[key] = replica.id
        if owner:
            self._forget_sites(replica.worker)

    def remove(self, replica_id: str) -> Replica:
        replica = self.replicas.pop(replica_id)
        self.of_model[replica.model].discard(replica_id)
        self.instances[replica.model].discard(replica_id)
        self.scores.pop(replica_id, None)
        shard = self.shard(replica)
        mask = gpu_mask(replica.gpus)
        self.masks[replica.worker][mask] -= 1
        if not self.masks[replica.worker][mask]:
            del self.masks[replica.worker][mask]
        for gpu in replica.gpus:
            key = (replica.worker, gpu)
            self.on_gpu[key].remove(replica_id)
            self.used[key] -= shard
            self.models_on[key].discard(replica.model)
            if replica.borrowed:
                self.borrowed_used[key] -= shard
            if self.owner_of.get(key) == replica_id:
                del self.owner_of[key]
        if replica.is_owner:
            self._forget_sites(replica.worker)
        return replica

    def update(self, replica: Replica) -> None:
        """Replace a replica by a new version of itself (same id, same GPUs)."""
        self.remove(replica.id)
        self.add(replica)

    def change(
        self, replica_id: str, *, kv_lent_bytes: int | None = None, borrowed: bool | None = None
    ) -> Replica:
        """Update what a plan changes of a replica in place (its lent space, its borrowed flag); return
        the new version."""
        score = self.scores.get(replica_id)
        new = self.replicas[replica_id].evolve(kv_lent_bytes=kv_lent_bytes, borrowed=borrowed)
        self.update(new)
        if score is not None and new.is_prewarm:
            self.scores[replica_id] = score
        return new

    def owner(self, key: GpuKey) -> Replica | None:
        rid = self.owner_of.get(key)
        return None if rid is None else self.replicas[rid]

    def free(self, key: GpuKey) -> int:
        """Bytes a new prewarmed replica may take on the GPU: lent space left if owned, else free pool."""
        owner = self.owner(key)
        if owner is None:
            return self.capacity[key] - self.used[key]
        return owner.kv_lent_bytes - self.borrowed_used[key]

    def guests(self, key: GpuKey) -> list[Replica]:
        """The replicas on the GPU other than its owner (prewarmed, loading, borrowed, failed)."""
        owner = self.owner_of.get(key)
        return [self.replicas[rid] for rid in self.on_gpu[key] if rid != owner]

    def touching(self, worker: str, gpus: Iterable[int]) -> list[Replica]:
        """Every replica with at least one GPU in ``gpus`` of ``worker``, each once, in a stable order."""
        seen: dict[str, Replica] = {}
        for gpu in gpus:
            for rid in self.on_gpu[(worker, gpu)]:
                seen.setdefault(rid, self.replicas[rid])
        return list(seen.values())

    def score(self, replica_id: str) -> float:
        return self.scores.get(replica_id, 0.0)
