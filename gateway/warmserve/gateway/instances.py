"""Which instance serves a request: a pure function of the instance table and the gateway's own counts.

The gateway counts its own requests in flight per instance (exact, updated at once) and uses the count
each worker reports (``inflight`` in ``/state``, up to one poll old) only to break ties. An instance at B
requests from this gateway is never chosen, so no worker is asked for more than it can take.

A request is never sent twice to an instance that failed it. "Instance" means one *serving period* of a
replica (:attr:`Instance.incarnation`): a replica that refused a request because it was being demoted, and
is promoted again later, is a new instance that request may use. Keyed by replica alone, the request
would wait for another replica until its deadline even with this one serving and idle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

#: An instance's identity: the worker base URL that reports it and its replica id on that worker.
InstanceKey = tuple[str, str]
#: One serving period of an instance: its key and the time (worker's clock) it entered ``serving``.
Incarnation = tuple[str, str, float]


@dataclass(frozen=True, slots=True)
class Instance:
    """One serving replica, as discovery last saw it."""

    worker: str
    replica: str
    model: str
    endpoint: str  # base URL its requests go to
    reported_inflight: int = 0
    serving_since: float = 0.0  # when the replica (last) entered ``serving``, as its worker reports

    @property
    def key(self) -> InstanceKey:
        return (self.worker, self.replica)

    @property
    def incarnation(self) -> Incarnation:
        return (self.worker, self.replica, self.serving_since)


def pick_instance(
    candidates: Sequence[Instance],
    inflight: Mapping[InstanceKey, int],
    cap: int,
    exclude: Set[Incarnation] = frozenset(),
) -> Instance | None:
    """The least-loaded candidate with fewer than ``cap`` of our requests, or None if there is none.

    Load is our own in-flight count; ties go to the lower reported count, then the lower key, so the
    choice is deterministic. Candidates whose incarnation is in ``exclude`` (those that already failed
    this request in their current serving period) are skipped.
    """
    best: Instance | None = None
    best_rank: tuple[int, int, InstanceKey] | None = None
    for instance in candidates:
        ours = inflight.get(instance.key, 0)
        if ours >= cap or instance.incarnation in exclude:
            continue
        rank = (ours, instance.reported_inflight, instance.key)
        if best_rank is None or rank < best_rank:
            best, best_rank = instance, rank
    return best
