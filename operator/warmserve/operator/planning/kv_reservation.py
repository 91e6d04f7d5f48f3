"""KV reservation with give-back (docs/planning.md): how much free KV space a serving replica lends out.

A serving instance keeps ``kv_total × load / B`` of its KV space free for the requests it may get
(``load``: its own in-flight count or its share of the model's smoothed demand, whichever is larger,
and never less than ``min_reserve_fraction`` of the total) and lends the rest of its free space to the
pool, where other models can be prewarmed. Unlike the paper's prototype we give it back: when its free
KV falls under that reserve the lent amount shrinks, and the borrowed replicas that no longer fit
are evicted, lowest score first. Nothing a serving request uses is ever lent, nor the room for one request
of the model's maximum length (``protocol.state.kept_kv_bytes``, the rule the worker applies too).

The lent amount does not follow that target tick by tick: it is set ``slack`` below it (``slack`` is
``lend_slack_requests`` requests' share of the KV space, kv_total/B each) and moves again only when the
target falls under it (a reclaim) or rises more than two slacks above it (:func:`lend_change`).
Otherwise every request arriving or finishing, and every decode step, would move it: each move is a
desired-state write and a KV resize on the worker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from warmserve.operator.planning.snapshot import Replica, SnapshotError

MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class KvConfig:
    """Constants of KV reservation.

    ``chunk_bytes``: the pool's chunk size; lent space is a whole number of chunks.
    ``min_reserve_fraction``: the part of its KV a serving replica keeps free however idle it is
    (our addition: headroom for the first requests of a burst while a reclaim is under way).
    ``min_lend_change_bytes``: lending grows only by at least this much (shrinking is never delayed).
    ``lend_slack_requests``: the width of the band the lent amount may drift in unchanged, in requests'
    shares of the KV space (0: it follows the target exactly).
    """

    chunk_bytes: int = 2 * MIB
    min_reserve_fraction: float = 0.1
    min_lend_change_bytes: int = 64 * MIB
    lend_slack_requests: float = 1.0

    def __post_init__(self) -> None:
        if self.chunk_bytes < 1:
            raise SnapshotError("kv.chunk_bytes", "an integer >= 1", self.chunk_bytes)
        if not 0 <= self.min_reserve_fraction <= 1:
            raise SnapshotError("kv.min_reserve_fraction", "a fraction in [0, 1]", self.min_reserve_fraction)
        if self.min_lend_change_bytes < 0:
            raise SnapshotError("kv.min_lend_change_bytes", "an integer >= 0", self.min_lend_change_bytes)
        if not (math.isfinite(self.lend_slack_requests) and self.lend_slack_requests >= 0):
            raise SnapshotError("kv.lend_slack_requests", "a finite number >= 0", self.lend_slack_requests)


def reserve_bytes(replica: Replica, max_concurrency: int, load_share: float, config: KvConfig) -> int:
    """Per-GPU KV bytes the serving ``replica`` keeps free for requests it may receive."""
    load = max(float(replica.inflight), load_share)
    fraction = min(1.0, max(config.min_reserve_fraction, load / max_concurrency))
    return math.ceil(replica.kv_total_bytes * fraction)


def lend_target(
    replica: Replica, max_concurrency: int, load_share: float, config: KvConfig, kept_bytes: int = 0
) -> int:
    """Per-GPU bytes the serving ``replica`` should lend: its free KV beyond the reserve, in whole chunks,
    and never the last ``kept_bytes`` of its KV space (``protocol.state.kept_kv_bytes``: room for one
    request of the model's maximum length, the bound the worker holds to as well)."""
    free = replica.kv_total_bytes - replica.kv_used_bytes
    reserve = reserve_bytes(replica, max_concurrency, load_share, config)
    spare = max(min(free - reserve, replica.kv_total_bytes - kept_bytes), 0)
    return spare // config.chunk_bytes * config.chunk_bytes


def lend_change(
    replica: Replica, max_concurrency: int, load_share: float, config: KvConfig, kept_bytes: int = 0
) -> int | None:
    """The new per-GPU lent amount of the serving ``replica``, or ``None`` to keep what it lends.

    A reclaim when the target (:func:`lend_target`) fell under the lent amount; more lending when the
    target rose more than two slacks (and ``min_lend_change_bytes``) above it; either way to one slack
    below the target, so that the next swing of one request either way changes nothing.
    """
    target = lend_target(replica, max_concurrency, load_share, config, kept_bytes)
    slack = _chunks(replica.kv_total_bytes * config.lend_slack_requests / max_concurrency, config)
    lent = replica.kv_lent_bytes
    wanted = max(target - slack, 0)
    if target < lent:
        return wanted
    if target - lent > 2 * slack and wanted - lent >= max(config.min_lend_change_bytes, 1):
        return wanted
    return None


def _chunks(size: float, config: KvConfig) -> int:
    """``size`` bytes rounded down to whole chunks."""
    return int(size) // config.chunk_bytes * config.chunk_bytes


@dataclass(frozen=True, slots=True)
class Borrower:
    """A replica sitting in lent KV space: its id, its GPUs, its weight bytes per GPU and its score."""

    id: str
    gpus: tuple[int, ...]
    shard_bytes: int
    score: float


def reclaim_victims(borrowers: Sequence[Borrower], lent_bytes: int) -> tuple[str, ...]:
    """Borrowers to evict so that, on every GPU, those left fit in ``lent_bytes``: lowest score first,
    and only ones on a GPU still over the limit."""
    use: dict[int, int] = {}
    for b in borrowers:
        for gpu in b.gpus:
            use[gpu] = use.get(gpu, 0) + b.shard_bytes
    victims: list[str] = []
    for b in sorted(borrowers, key=lambda b: (b.score, b.id)):
        if any(use[g] > lent_bytes for g in b.gpus):
            victims.append(b.id)
            for gpu in b.gpus:
                use[gpu] -= b.shard_bytes
    return tuple(victims)
