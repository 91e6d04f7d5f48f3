"""Invariants of a planning step on random consistent snapshots (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests.operator.planning_builders import random_snapshots
from warmserve.operator.planning.desired import desired_states
from warmserve.operator.planning.occupancy import gpu_mask
from warmserve.operator.planning.plan import ColdStart, Demote, Evict, Plan, Promote, apply_plan
from warmserve.operator.planning.planner import plan_step
from warmserve.operator.planning.reactive import ReactiveState
from warmserve.operator.planning.snapshot import Snapshot
from warmserve.protocol.state import DesiredState, ReplicaState

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def planned(snapshot: Snapshot) -> tuple[Plan, Snapshot, ReactiveState]:
    plan, state = plan_step(snapshot, ReactiveState())
    return plan, apply_plan(snapshot, plan), state


def gpu_sets(snapshot: Snapshot) -> dict[str, list[int]]:
    sets: dict[str, list[int]] = {w.name: [] for w in snapshot.workers}
    for r in snapshot.replicas:
        sets[r.worker].append(gpu_mask(r.gpus))
    return sets


def is_laminar(masks: list[int]) -> bool:
    return all(a & b in (0, a, b) for a in masks for b in masks)


@SETTINGS
@given(random_snapshots())
def test_the_laminar_family_holds_after_any_plan(snapshot: Snapshot) -> None:
    _, after, _ = planned(snapshot)
    for masks in gpu_sets(after).values():
        assert is_laminar(masks)


@SETTINGS
@given(random_snapshots())
def test_no_gpu_is_over_committed_nor_holds_a_model_twice(snapshot: Snapshot) -> None:
    _, after, _ = planned(snapshot)  # apply_plan re-validates: weights fit, one model per GPU, borrowers fit
    for r in after.replicas:
        if r.is_owner:
            capacity = min(after.worker(r.worker).capacity(g) for g in r.gpus)
            shard = after.models[r.model].spec.shard_bytes
            assert shard + r.kv_total_bytes <= capacity
            assert r.kv_lent_bytes <= r.kv_total_bytes - r.kv_used_bytes  # nothing in use is lent
    seen: set[tuple[str, int, str]] = set()
    for r in after.replicas:
        for g in r.gpus:
            assert (r.worker, g, r.model) not in seen
            seen.add((r.worker, g, r.model))


@SETTINGS
@given(random_snapshots())
def test_applying_a_plan_and_planning_again_yields_nothing(snapshot: Snapshot) -> None:
    _, after, state = planned(snapshot)
    again, _ = plan_step(after, state)
    assert again.actions == (), again.describe()


@SETTINGS
@given(random_snapshots())
def test_a_cold_start_only_happens_when_no_prewarmed_replica_can_be_promoted(snapshot: Snapshot) -> None:
    plan, _, _ = planned(snapshot)
    promoted = {a.replica_id for a in plan.actions if isinstance(a, Promote)}
    evicted = {a.replica_id for a in plan.actions if isinstance(a, Evict)}
    for action in plan.actions:
        if isinstance(action, ColdStart):
            spare = [
                r.id
                for r in snapshot.replicas
                if r.model == action.model
                and r.state is ReplicaState.PREWARMED
                and r.is_prewarm
                and not r.borrowed
                and r.id not in promoted | evicted
            ]
            assert not spare, f"{action} while {spare} were prewarmed"


@SETTINGS
@given(random_snapshots())
def test_serving_replicas_are_never_evicted_unless_demoted_and_every_action_has_a_reason(
    snapshot: Snapshot,
) -> None:
    plan, after, _ = planned(snapshot)
    demoted = {a.replica_id for a in plan.actions if isinstance(a, Demote)}
    serving = {r.id for r in snapshot.replicas if r.is_instance} - demoted
    for action in plan.actions:
        assert action.reason
        if isinstance(action, Evict):
            assert action.replica_id not in serving
    for desired in desired_states(after, generation=1).values():
        assert DesiredState.from_json(desired.to_json()) == desired
