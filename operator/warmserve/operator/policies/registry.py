"""Policies by name, for the simulator and the local runner: ``policy_by_name(name, sizing)``.

Each entry says what the caller must supply besides the policy and its initial state: the kind of
forecast (none, learned online, or the oracle's true future) and, for ``muxserve``, that it is a static
colocated layout the simulator runs itself (the worker protocol has one serving replica per GPU).
``dedicated``, ``dedicated-mean`` and ``muxserve`` are sized from the expected load per model
(:class:`Sizing`); asking for them without one, or for an unknown name, raises
:class:`InvalidFieldError` listing what is accepted.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from warmserve.operator.planning.prewarm_scores import ScoreConfig
from warmserve.operator.policies.autoscale import AutoscaleConfig, AutoscaleState, autoscale_step
from warmserve.operator.policies.dedicated import DedicatedConfig, dedicated_step
from warmserve.operator.policies.warmserve import CONFIGS, initial_state, warmserve_policy
from warmserve.operator.ports import Policy
from warmserve.protocol.errors import InvalidFieldError


class ForecastNeed(enum.StrEnum):
    """What forecast source a policy must be run with."""

    NONE = "none"  # NoForecast
    ONLINE = "online"  # learned from the demand seen (and earlier history)
    ORACLE = "oracle"  # the true future load (simulation only)


@dataclass(frozen=True, slots=True)
class Sizing:
    """Expected concurrency per model over the run: its mean and its peak."""

    mean: Mapping[str, float]
    peak: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    """A runnable policy: ``policy`` is ``None`` only for a static colocated layout (``muxserve``).
    ``engine_per_replica``: the system it models starts an engine per serving replica (so a cold start
    pays the engine start), where WarmServe's universal workers keep theirs up. ``scores``: the scoring
    rule it ranks prewarmed replicas by, for the priorities the scheduler writes."""

    name: str
    policy: Policy | None
    initial_state: Any
    forecast: ForecastNeed
    colocated: bool = False
    engine_per_replica: bool = False
    scores: ScoreConfig = field(default_factory=ScoreConfig)


_FORECASTS = {"warmserve": ForecastNeed.ONLINE, "oracle": ForecastNeed.ORACLE}
#: ``autoscale`` keeps an idle instance 60 s; ``autoscale-no-keep-alive`` frees it at once (keep-alive 0 s,
#: the default of ServerlessLLM's code): fewer GPUs held, more cold starts.
AUTOSCALE_KEEP_ALIVE_S = {"autoscale": AutoscaleConfig().keep_alive_s, "autoscale-no-keep-alive": 0.0}
NAMES: tuple[str, ...] = (*CONFIGS, *AUTOSCALE_KEEP_ALIVE_S, "muxserve", "dedicated", "dedicated-mean")
SIZED = frozenset({"muxserve", "dedicated", "dedicated-mean"})


def policy_by_name(name: str, sizing: Sizing | None = None) -> PolicyEntry:
    """The policy called ``name``; raises :class:`InvalidFieldError` for an unknown name, or for a
    sized policy without ``sizing``."""
    if name not in NAMES:
        raise InvalidFieldError("policy", f"one of {list(NAMES)}", name)
    if name in SIZED and sizing is None:
        raise InvalidFieldError(
            "sizing", f"the expected load per model (policy {name!r} is sized by it)", None
        )
    if name in CONFIGS:
        need = _FORECASTS.get(name, ForecastNeed.ONLINE if name != "no-forecast" else ForecastNeed.NONE)
        planner = CONFIGS[name]
        return PolicyEntry(name, warmserve_policy(planner), initial_state(), need, scores=planner.scores)
    if name in AUTOSCALE_KEEP_ALIVE_S:
        config = AutoscaleConfig(keep_alive_s=AUTOSCALE_KEEP_ALIVE_S[name])
        scaling = partial(autoscale_step, config=config)
        return PolicyEntry(name, scaling, AutoscaleState(), ForecastNeed.NONE, engine_per_replica=True)
    if name == "muxserve" or sizing is None:
        return PolicyEntry(name, None, None, ForecastNeed.NONE, colocated=True)
    concurrency = sizing.peak if name == "dedicated" else sizing.mean
    sized = DedicatedConfig(concurrency)
    static = partial(dedicated_step, config=sized)
    return PolicyEntry(name, static, None, ForecastNeed.NONE, engine_per_replica=True)
