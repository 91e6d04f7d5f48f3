"""The policies ``warmserve local`` can run, and a wrapper that counts what they decide.

``warmserve`` is the planner (:func:`~warmserve.operator.planner.plan_step`) with trace forecasts;
``no-forecast`` is the same planner with no forecast at all — the reactive layer alone, scaling from zero
on demand and keeping demoted replicas' weights — the baseline available until the policy registry of
the simulator lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warmserve.operator.autoscaler import AutoscalerState
from warmserve.operator.plan import ColdStart, Plan, Promote
from warmserve.operator.planner import PlannerConfig, plan_step
from warmserve.operator.scheduler import Policy
from warmserve.operator.snapshot import Snapshot
from warmserve.worker.errors import InvalidFieldError

#: Policy names → whether the policy uses forecasts.
POLICIES: dict[str, bool] = {"warmserve": True, "no-forecast": False}
BASELINES = tuple(name for name in POLICIES if name != "warmserve")


@dataclass(frozen=True, slots=True)
class PolicyChoice:
    """A policy to run: its step function, its initial state, and whether to give it forecasts."""

    name: str
    step: Policy
    initial_state: Any
    uses_forecasts: bool


def policy(name: str) -> PolicyChoice:
    """The policy called ``name``; an unknown name raises :class:`InvalidFieldError` listing them."""
    if name not in POLICIES:
        raise InvalidFieldError("policy", f"one of {sorted(POLICIES)}", name)
    return PolicyChoice(name, _local_step, AutoscalerState(), POLICIES[name])


def _local_step(snapshot: Snapshot, state: AutoscalerState) -> tuple[Plan, AutoscalerState]:
    """The planner without KV lending: a worker reports only the KV it mapped, which excludes what it
    lends, so a lending replica's report fails the snapshot's ``kv_lent_bytes <= kv_total_bytes`` check
    and the scheduler would hold steady for the rest of the run (reported; to be fixed in one of them)."""
    return plan_step(snapshot, state, LOCAL_PLANNER)


LOCAL_PLANNER = PlannerConfig(kv_reservation=False)


@dataclass
class ActionCounts:
    """Scale-outs a policy decided during one run: cold starts and promotions of prewarmed replicas."""

    cold_starts: int = 0
    promotions: int = 0


def counting(step: Policy, counts: ActionCounts) -> Policy:
    """``step`` that also adds the cold starts and promotions of every plan it returns to ``counts``."""

    def counted(snapshot: Snapshot, state: Any) -> tuple[Plan, Any]:
        plan, next_state = step(snapshot, state)
        counts.cold_starts += sum(isinstance(a, ColdStart) for a in plan.actions)
        counts.promotions += sum(isinstance(a, Promote) for a in plan.actions)
        return plan, next_state

    return counted
