"""Where a replica goes (docs/planning.md): evict-aware prewarm placement, the cold scale-out GPU choice and
the choice of the prewarmed replica to promote.

Candidate GPU sets lie within one worker (tensor parallelism never crosses workers), are aligned
blocks of the replica's size (see :meth:`Occupancy.blocks`) and must keep each worker's GPU sets a
laminar family; a GPU never holds two replicas of one model. Each chooser returns the best
:class:`Choice` (with the replicas it must evict) or ``None`` when nothing fits; ties are broken by
worker order, then GPU index, so a choice is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

from warmserve.operator.planning.kv_reservation import MIB
from warmserve.operator.planning.occupancy import GpuKey, Occupancy, gpu_mask, is_laminar_with
from warmserve.operator.planning.snapshot import Replica, SnapshotError
from warmserve.protocol.state import ModelSpec, ReplicaState, kept_kv_bytes


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    """Constants of placement.

    ``min_serving_kv_bytes``: the least KV space per GPU a replica must have besides its weights to be
    served there, the worker's pool chunk (a cold start or promotion onto a GPU smaller than this, or than
    the room for one request of the model's maximum length in such chunks, is refused: :func:`serving_need`).
    ``evict_aware``: whether a prewarm may evict lower-score prewarmed replicas to fit (the paper's
    prototype did not; off only for the ablation).
    """

    min_serving_kv_bytes: int = 2 * MIB
    evict_aware: bool = True

    def __post_init__(self) -> None:
        if self.min_serving_kv_bytes < 0:
            raise SnapshotError(
                "placement.min_serving_kv_bytes", "an integer >= 0", self.min_serving_kv_bytes
            )


def serving_need(spec: ModelSpec, config: PlacementConfig) -> int:
    """Per-GPU bytes a serving replica of ``spec`` needs: its weights and the KV space it never lends
    (``protocol.state.kept_kv_bytes``, the worker's rule, which refuses a promotion with less)."""
    chunk = max(config.min_serving_kv_bytes, 1)
    return spec.shard_bytes + max(
        config.min_serving_kv_bytes, kept_kv_bytes(spec, spec.kv_bytes_per_token, chunk)
    )


@dataclass(frozen=True, slots=True)
class Choice:
    """A GPU set for a replica, the replicas to evict first, and the facts the choice rested on."""

    worker: str
    gpus: tuple[int, ...]
    evict: tuple[Replica, ...] = ()
    borrowed: bool = False
    top: bool = True
    overlapped: float = 0.0


def choose_prewarm(occ: Occupancy, model: str, score: float, config: PlacementConfig) -> Choice | None:
    """Best GPU set for a prewarmed replica of ``model`` scoring ``score``, or ``None`` if none fits.

    Prefers, in order: sets where it becomes the top-score replica; the least score evicted; sets whose
    promotion would not break a block of the widest model (:meth:`Occupancy.breaks_block`); the least
    score overlapped; the free pool over KV space lent by a serving replica. Only prewarmed replicas
    of lower score are evicted (never serving ones, never lent space beyond what is lent).
    """
    spec = occ.models[model].spec
    tp, need = spec.tensor_parallel, spec.shard_bytes
    limit = score if config.evict_aware else float("-inf")
    best: tuple[tuple[bool, float, bool, float, bool, int, int], Choice] | None = None
    for site in occ.sites(tp):
        keys = [(site.worker, g) for g in site.gpus]
        fits = _fits(occ, keys, model, need, site.lender)
        if fits is None:
            continue
        if not fits and best is not None and best[0][:2] == (False, 0.0):
            continue  # a top set without eviction is known: a set that must evict cannot beat it
        if tp > 1 and not is_laminar_with(gpu_mask(site.gpus), occ.masks[site.worker]):
            continue
        evict = () if fits else _make_room(occ, keys, need, limit)
        if evict is None:
            continue
        top, overlapped = _overlap(occ, keys, evict, score)
        borrowed = site.lender is not None
        evicted = sum(occ.score(r.id) for r in evict)
        breaks = occ.breaks_block(site.worker, site.gpus)
        key = (not top, evicted, breaks, overlapped, borrowed, site.windex, site.gpus[0])
        if best is None or key < best[0]:
            best = (key, Choice(site.worker, site.gpus, evict, borrowed, top, overlapped))
            if key[:5] == (False, 0.0, False, 0.0, False):
                break  # nothing can beat an idle, unshared set in a block already served
    return None if best is None else best[1]


def _fits(occ: Occupancy, keys: list[GpuKey], model: str, need: int, lender: Replica | None) -> bool | None:
    """``None`` if a prewarm of ``model`` cannot go on ``keys`` (a GPU holds the model, or the lent
    space is smaller than the replica: evicting borrowers cannot grow it); else whether ``need``
    bytes fit without evicting anything."""
    if lender is not None and lender.kv_lent_bytes < need:
        return None
    fits = True
    for key in keys:
        if model in occ.models_on[key]:
            return None
        if lender is None:
            fits = fits and occ.capacity[key] - occ.used[key] >= need
        else:
            fits = fits and lender.kv_lent_bytes - occ.borrowed_used[key] >= need
    return fits


def _overlap(
    occ: Occupancy, keys: list[GpuKey], evict: tuple[Replica, ...], score: float
) -> tuple[bool, float]:
    """Whether a replica scoring ``score`` would top every prewarmed replica left on ``keys``, and the
    total score it would overlap."""
    skip = {r.id for r in evict}
    top, total = True, 0.0
    for key in keys:
        skip.add(occ.owner_of.get(key, ""))
        for rid in occ.on_gpu[key]:
            if rid in skip:
                continue
            skip.add(rid)
            other = occ.scores.get(rid, 0.0)
            total += other
            top = top and other < score
    return top, total


def _make_room(occ: Occupancy, keys: list[GpuKey], need: int, limit: float) -> tuple[Replica, ...] | None:
    """Prewarmed replicas scoring under ``limit`` to evict, lowest first, so ``need`` bytes fit on every
    GPU of ``keys``; ``None`` if even that is not enough. Replicas placed in this step are never
    evicted in it (so a step always ends: each eviction removes one replica it started with)."""
    freed: dict[GpuKey, int] = {}
    evict: dict[str, Replica] = {}
    for key in keys:
        deficit = need - occ.free(key) - freed.get(key, 0)
        if deficit <= 0:
            continue
        candidates = sorted(
            (
                r
                for r in occ.guests(key)
                if r.is_prewarm and r.id not in evict and r.id not in occ.fresh and occ.score(r.id) < limit
            ),
            key=lambda r: (occ.score(r.id), r.id),
        )
        for replica in candidates:
            if deficit <= 0:
                break
            evict[replica.id] = replica
            shard = occ.shard(replica)
            for gpu in replica.gpus:
                freed[(key[0], gpu)] = freed.get((key[0], gpu), 0) + shard
            deficit -= shard
        if deficit > 0:
            return None
    return tuple(evict.values())


def choose_cold(occ: Occupancy, model: str, config: PlacementConfig) -> Choice | None:
    """GPU set for a cold start of ``model``: idle GPUs (no serving replica, no replica of ``model``)
    with room for its weights plus ``min_serving_kv_bytes``, first in a block of the widest model that
    already serves (:meth:`Occupancy.breaks_block`), then covered by the lowest total score, then the
    fewest prewarmed replicas, all of which it evicts. ``None`` if no set qualifies."""
    spec = occ.models[model].spec
    need = serving_need(spec, config)
    best: tuple[tuple[bool, float, int, int, int], Choice] | None = None
    for site in occ.sites(spec.tensor_parallel):
        if site.lender is not None:
            continue  # the GPUs serve another model
        keys = [(site.worker, g) for g in site.gpus]
        if any(model in occ.models_on[k] or occ.capacity[k] < need for k in keys):
            continue
        covering = occ.touching(site.worker, site.gpus)
        breaks = occ.breaks_block(site.worker, site.gpus)
        key = (breaks, sum(occ.score(r.id) for r in covering), len(covering), site.windex, site.gpus[0])
        if key[:3] == (False, 0.0, 0):
            return Choice(site.worker, site.gpus)
        if best is None or key < best[0]:
            best = (key, Choice(site.worker, site.gpus, evict=tuple(covering)))
    return None if best is None else best[1]


@dataclass(frozen=True, slots=True)
class Promotion:
    """The prewarmed replica to promote and the other replicas on its GPUs that promotion drops."""

    replica: Replica
    evict: tuple[Replica, ...]
    overlapped: float


def choose_promotion(occ: Occupancy, model: str, config: PlacementConfig) -> Promotion | None:
    """The prewarmed replica of ``model`` to promote: fully loaded before loading (most progress first),
    then one that breaks no block of the widest model (:meth:`Occupancy.breaks_block`), then the one
    whose promotion drops the least score of other prewarmed replicas on its GPUs.
    Borrowed replicas (in a serving replica's lent space) cannot be served there and are skipped."""
    need = serving_need(occ.models[model].spec, config)
    best: tuple[tuple[bool, float, bool, float, str], Promotion] | None = None
    for rid in occ.of_model[model]:
        replica = occ.replicas[rid]
        keys = [(replica.worker, g) for g in replica.gpus]
        if not replica.is_prewarm or replica.borrowed:
            continue
        if any(k in occ.owner_of or occ.capacity[k] < need for k in keys):
            continue
        others = [r for r in occ.touching(replica.worker, replica.gpus) if r.id != rid]
        overlapped = sum(occ.score(r.id) for r in others)
        breaks = occ.breaks_block(replica.worker, replica.gpus)
        key = (replica.state is not ReplicaState.PREWARMED, -replica.progress, breaks, overlapped, rid)
        if best is None or key < best[0]:
            best = (key, Promotion(replica, tuple(others), overlapped))
    return None if best is None else best[1]
