"""The worker's convergence steps, on hand-made desired and current states."""

from __future__ import annotations

from warmserve.protocol.state import DesiredReplica, DesiredState, ModelSpec, ReplicaState, Role
from warmserve.worker.reconcile import Current, StepKind, converge

MODELS = {m: ModelSpec(name=m, weights=f"/cache/{m}", weight_bytes=100) for m in ("a", "b", "c")}


def desired(*replicas: DesiredReplica) -> DesiredState:
    return DesiredState(worker="w", generation=1, models=MODELS, replicas=replicas)


def want(rid: str, model: str, role: Role, gpu: int = 0, lend: int = 0) -> DesiredReplica:
    return DesiredReplica(id=rid, model=model, gpus=(gpu,), role=role, kv_lend_bytes=lend)


def have(rid: str, model: str, state: ReplicaState, gpu: int = 0, inflight: int = 0) -> Current:
    return Current(id=rid, model=model, gpus=(gpu,), state=state, inflight=inflight)


def kinds(steps: list) -> list[tuple[StepKind, str]]:  # type: ignore[type-arg]
    return [(s.kind, s.replica) for s in steps]


def test_new_replicas_load_and_prewarmed_ones_promote_after_memory_is_freed() -> None:
    steps = converge(
        desired(want("a0", "a", Role.SERVE), want("c0", "c", Role.PREWARM, gpu=1)),
        [have("a0", "a", ReplicaState.PREWARMED), have("b0", "b", ReplicaState.PREWARMED)],
    )
    assert kinds(steps) == [(StepKind.RELEASE, "b0"), (StepKind.PROMOTE, "a0"), (StepKind.LOAD, "c0")]


def test_serving_replica_drains_then_demotes_only_when_idle() -> None:
    goal = desired(want("a0", "a", Role.PREWARM))
    assert kinds(converge(goal, [have("a0", "a", ReplicaState.SERVING)])) == [(StepKind.DRAIN, "a0")]
    assert converge(goal, [have("a0", "a", ReplicaState.DRAINING, inflight=2)]) == []
    assert kinds(converge(goal, [have("a0", "a", ReplicaState.DRAINING)])) == [(StepKind.DEMOTE, "a0")]
    serve_again = desired(want("a0", "a", Role.SERVE))
    assert kinds(converge(serve_again, [have("a0", "a", ReplicaState.DRAINING, inflight=2)])) == [
        (StepKind.RESUME, "a0")
    ]


def test_unwanted_replicas_are_cancelled_drained_or_released_by_state() -> None:
    steps = converge(
        desired(),
        [
            have("l", "a", ReplicaState.LOADING),
            have("s", "b", ReplicaState.SERVING, gpu=1),
            have("f", "c", ReplicaState.FAILED, gpu=2),
            have("p", "a", ReplicaState.PROMOTING, gpu=3),
        ],
    )
    assert kinds(steps) == [(StepKind.CANCEL_LOAD, "l"), (StepKind.DRAIN, "s"), (StepKind.RELEASE, "f")]


def test_same_id_on_other_gpus_is_released_not_reused() -> None:
    steps = converge(desired(want("a0", "a", Role.PREWARM, gpu=1)), [have("a0", "a", ReplicaState.PREWARMED)])
    assert kinds(steps) == [(StepKind.RELEASE, "a0")]


def test_converged_state_needs_no_steps_and_lending_changes_are_applied() -> None:
    goal = desired(want("a0", "a", Role.SERVE, lend=64), want("b0", "b", Role.PREWARM, gpu=1))
    now = [
        Current("a0", "a", (0,), ReplicaState.SERVING, kv_lend_bytes=64),
        have("b0", "b", ReplicaState.PREWARMED, gpu=1),
    ]
    assert converge(goal, now) == []
    now[0] = Current("a0", "a", (0,), ReplicaState.SERVING, kv_lend_bytes=0)
    assert kinds(converge(goal, now)) == [(StepKind.SET_LENDING, "a0")]


def test_failed_replica_that_is_still_desired_stays_failed() -> None:
    assert converge(desired(want("a0", "a", Role.SERVE)), [have("a0", "a", ReplicaState.FAILED)]) == []
