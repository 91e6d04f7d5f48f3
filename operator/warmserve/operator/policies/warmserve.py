"""The ``warmserve`` policy and its ablations: :func:`warmserve.operator.planning.planner.plan_step` under a
:class:`PlannerConfig` per variant (arXiv 2512.09472; docs/planning.md).

- ``warmserve``: forecast-driven prewarming, KV reservation, evict-aware placement.
- ``no-kv-reservation``: serving replicas never lend free KV space, so prewarms use the free pool only.
- ``no-evict-aware``: a prewarm never evicts a lower-score prewarmed replica to fit.
- ``no-forecast``: the default configuration fed no forecasts (the caller gives it ``NoForecast``); it is
  the reactive layer alone, demoted instances still kept prewarmed.
- ``oracle``: the default configuration fed the true future load (the simulator's perfect forecast).

The forecast each variant needs is the registry's business; this module only fixes the configurations.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from types import MappingProxyType

from warmserve.operator.planning.placement import PlacementConfig
from warmserve.operator.planning.planner import PlannerConfig, plan_step
from warmserve.operator.planning.reactive import ReactiveState
from warmserve.operator.ports import Policy

#: The planner configuration of each WarmServe variant, by policy name.
CONFIGS: Mapping[str, PlannerConfig] = MappingProxyType(
    {
        "warmserve": PlannerConfig(),
        "no-forecast": PlannerConfig(),
        "no-kv-reservation": PlannerConfig(kv_reservation=False),
        "no-evict-aware": PlannerConfig(placement=PlacementConfig(evict_aware=False)),
        "oracle": PlannerConfig(),
    }
)


def warmserve_policy(config: PlannerConfig) -> Policy:
    """The scheduler policy that plans every step with ``config``."""
    return partial(plan_step, config=config)


def initial_state() -> ReactiveState:
    """The planner's state before the first tick: no demand seen, nothing protected."""
    return ReactiveState()
