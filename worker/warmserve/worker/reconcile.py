"""What a worker must do to reach its desired state: a pure function from (desired, current) to steps.

The worker's runtime calls :func:`converge` whenever its desired state or a replica's state changes and
carries out the steps in the order given. The order frees memory before it uses any, so that no step waits
for memory a later one frees: first free memory (drop replicas no longer wanted, demote serving ones that
should only be prewarmed), then use it (promote prewarmed replicas, start loads). A step whose replica is
busy (still loading, still draining) is simply not emitted: the next call, after that replica's state
changes, emits it.

A draining replica is demoted or released only once nothing is in flight on it.
A ``failed`` replica that is still desired stays failed (the scheduler sees the reason in the observed
state and decides); once the desired state drops it, it is released like any other.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from warmserve.protocol.state import DesiredReplica, DesiredState, ReplicaState, Role


class StepKind(enum.StrEnum):
    CANCEL_LOAD = "cancel_load"  # loading, no longer wanted: stop the copy, release the slot
    RELEASE = "release"  # prewarmed or failed, no longer wanted: unmap its chunks
    DRAIN = "drain"  # serving, no longer wanted as serving: stop admitting, finish in-flight requests
    RESUME = "resume"  # draining, wanted as serving again: admit requests again
    DEMOTE = "demote"  # drained and wanted as prewarmed: unmap the KV part only
    PROMOTE = "promote"  # prewarmed and wanted as serving: adopt the weights in place, map KV lazily
    LOAD = "load"  # not here: map chunks for the weights into a slot and copy them in
    SET_LENDING = "set_lending"  # serving: lend this much free KV space per GPU to the pool


@dataclass(frozen=True, slots=True)
class Current:
    """What the runtime knows of one of its replicas."""

    id: str
    model: str
    gpus: tuple[int, ...]
    state: ReplicaState
    inflight: int = 0
    kv_lend_bytes: int = 0

    def __init__(  # written out: see protocol.ObservedReplica.__init__
        self,
        id: str,
        model: str,
        gpus: tuple[int, ...],
        state: ReplicaState,
        inflight: int = 0,
        kv_lend_bytes: int = 0,
    ) -> None:
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "gpus", gpus)
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "inflight", inflight)
        object.__setattr__(self, "kv_lend_bytes", kv_lend_bytes)


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    replica: str
    desired: DesiredReplica | None = None  # for LOAD, PROMOTE and SET_LENDING


_FREEING = (StepKind.CANCEL_LOAD, StepKind.RELEASE, StepKind.DRAIN, StepKind.DEMOTE)


def converge(desired: DesiredState, current: Sequence[Current]) -> list[Step]:
    """The steps that move ``current`` towards ``desired``, memory-freeing steps first.

    A replica whose id is desired but whose model or GPUs differ is treated as unwanted (released) and
    its desired namesake waits for the next call, so a slot is never reused for a different model.
    """
    wanted = {r.id: r for r in desired.replicas}
    have = {c.id: c for c in current}
    steps: list[Step] = []
    for c in current:
        target = wanted.get(c.id)
        if target is not None and (target.model, target.gpus) != (c.model, c.gpus):
            target = None
        steps.extend(_steps_for(c, target))
    for rid, target in wanted.items():
        if rid not in have:
            steps.append(Step(StepKind.LOAD, rid, target))
    return sorted(steps, key=lambda s: 0 if s.kind in _FREEING else 1)


def _steps_for(c: Current, target: DesiredReplica | None) -> list[Step]:
    state = c.state
    if target is None:
        return _drop(c)
    if state is ReplicaState.PREWARMED and target.role is Role.SERVE:
        return [Step(StepKind.PROMOTE, c.id, target)]
    if state is ReplicaState.SERVING and target.role is Role.PREWARM:
        return [Step(StepKind.DRAIN, c.id)]
    if state is ReplicaState.DRAINING and target.role is Role.SERVE:
        return [Step(StepKind.RESUME, c.id, target)]
    if state is ReplicaState.DRAINING and c.inflight == 0:
        return [Step(StepKind.DEMOTE, c.id)]
    if state is ReplicaState.SERVING and target.kv_lend_bytes != c.kv_lend_bytes:
        return [Step(StepKind.SET_LENDING, c.id, target)]
    return []  # in place, or busy (loading / promoting / draining) until its state changes


def _drop(c: Current) -> list[Step]:
    if c.state is ReplicaState.LOADING:
        return [Step(StepKind.CANCEL_LOAD, c.id)]
    if c.state is ReplicaState.SERVING:
        return [Step(StepKind.DRAIN, c.id)]
    if c.state in (ReplicaState.PREWARMED, ReplicaState.FAILED) or (
        c.state is ReplicaState.DRAINING and c.inflight == 0
    ):
        return [Step(StepKind.RELEASE, c.id)]
    return []  # promoting, or draining with requests in flight: wait for its state to change
