"""The policies ``warmserve local`` can run (from the policy registry), and a counter of what they decide.

Only policies that run on real workers and need no more than online forecasts qualify: WarmServe, its
ablations, and the ``autoscale`` baseline (ServerlessLLM-like scale from zero). The oracle needs the true
future and ``muxserve`` is a layout only the simulator can play; ``dedicated`` needs a sizing the
runner does not make.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warmserve.operator.planning.plan import ColdStart, Plan, Promote
from warmserve.operator.planning.prewarm_scores import ScoreConfig
from warmserve.operator.planning.snapshot import Snapshot
from warmserve.operator.policies.registry import NAMES, ForecastNeed, policy_by_name
from warmserve.operator.ports import Policy
from warmserve.protocol.errors import InvalidFieldError

#: Policies runnable here, in registry order.
LOCAL_POLICIES: tuple[str, ...] = tuple(
    n for n in NAMES if n not in ("oracle", "muxserve", "dedicated", "dedicated-mean")
)


@dataclass(frozen=True, slots=True)
class PolicyChoice:
    """A policy to run here: its step, its initial state, whether it is given forecasts, and the
    scoring rule it ranks prewarmed replicas by."""

    name: str
    step: Policy
    initial_state: Any
    uses_forecasts: bool
    scores: ScoreConfig


#: What ``warmserve local`` measures by default.
DEFAULT_POLICY = "warmserve"


def policy(name: str) -> PolicyChoice:
    """The policy called ``name``; one not runnable here raises :class:`InvalidFieldError` listing them."""
    entry = policy_by_name(name) if name in LOCAL_POLICIES else None
    if entry is None or entry.policy is None:
        raise InvalidFieldError("policy", f"one of {list(LOCAL_POLICIES)}", name)
    online = entry.forecast is ForecastNeed.ONLINE
    return PolicyChoice(name, entry.policy, entry.initial_state, online, entry.scores)


@dataclass
class ActionCounts:
    """Scale-outs a policy decided during one run: cold starts and promotions of prewarmed replicas (the
    figures ``cold_starts`` and ``prewarm_hits`` of :mod:`warmserve.replay.figures`)."""

    cold_starts: int = 0
    prewarm_hits: int = 0


def counting(step: Policy, counts: ActionCounts) -> Policy:
    """``step`` that also adds the cold starts and promotions of every plan it returns to ``counts``."""

    def counted(snapshot: Snapshot, state: Any) -> tuple[Plan, Any]:
        plan, next_state = step(snapshot, state)
        counts.cold_starts += sum(isinstance(a, ColdStart) for a in plan.actions)
        counts.prewarm_hits += sum(isinstance(a, Promote) for a in plan.actions)
        return plan, next_state

    return counted
