"""A scenario (workload + cluster + models + run constants) and running policies on it side by side.

:func:`run_policy` runs one policy by name; :func:`max_rate_at_slo` searches the highest request rate a
policy serves with at least ``target`` SLO attainment: it doubles the rate multiplier until the policy
fails, then bisects ``steps`` times; every run uses the same seed, so only the rate changes.
"""

from __future__ import annotations

import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from warmserve.operator.planning.snapshot import ModelConfig
from warmserve.operator.policies.registry import NAMES
from warmserve.protocol.errors import InvalidFieldError
from warmserve.sim.catalog import DEFAULT_SHAPES, ClusterSpec, catalog, parse_shape
from warmserve.sim.results import summarize
from warmserve.sim.simulator import RunResult, SimConfig, Simulation
from warmserve.sim.workload import Workload, WorkloadSpec, build_workload

#: The policies a default run compares.
DEFAULT_POLICIES: tuple[str, ...] = ("warmserve", "autoscale", "muxserve", "dedicated", "oracle")
SIM_POLICIES: tuple[str, ...] = NAMES


@dataclass(frozen=True)
class Scenario:
    """Everything a run needs but the policy."""

    workload: WorkloadSpec
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    shapes: tuple[str, ...] = DEFAULT_SHAPES
    max_concurrency: int = 16
    slo_ttft_s: float = 2.0
    sim: SimConfig = field(default_factory=SimConfig)


def check_policies(names: Sequence[str]) -> tuple[str, ...]:
    """The names, each validated (an unknown one raises :class:`InvalidFieldError` listing the accepted)."""
    if not names:
        raise InvalidFieldError("policies", f"one or more of {list(SIM_POLICIES)}", "")
    for name in names:
        if name not in SIM_POLICIES:
            raise InvalidFieldError("policies", f"names from {list(SIM_POLICIES)}", name)
    return tuple(names)


def prepare(scenario: Scenario) -> tuple[Workload, dict[str, ModelConfig]]:
    """Build the workload and the model catalog (validating both; the cheap checks first)."""
    for shape in scenario.shapes:
        parse_shape(shape)
    workload = build_workload(scenario.workload)
    models = catalog(
        workload.models, scenario.shapes, scenario.cluster, scenario.max_concurrency, scenario.slo_ttft_s
    )
    return workload, models


def run_policy(
    scenario: Scenario,
    workload: Workload,
    models: dict[str, ModelConfig],
    name: str,
    progress: Callable[[float], None] | None = None,
) -> RunResult:
    """One policy's run on the prepared scenario."""
    return Simulation(workload, scenario.cluster, models, name, scenario.sim, progress).run()


def compiled_modules() -> tuple[str, ...]:
    """The loaded ``warmserve`` modules that run as mypyc-compiled extensions: the scheduler core and the
    event loop in a regular install, none in an editable one (``hatch_build.py``). Benchmarks print it
    beside their wall times."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return tuple(
        sorted(
            name
            for name, module in list(sys.modules.items())
            if name.startswith("warmserve.") and str(getattr(module, "__file__", "")).endswith(suffixes)
        )
    )


def max_rate_at_slo(scenario: Scenario, name: str, target: float = 0.99, steps: int = 4) -> float:
    """The highest total mean rate (requests/s, the workload's own: a per-request trace's rate times the
    multiplier) at which ``name`` attains ``target``: the multiplier of ``scenario``'s rate doubles from 1 (up
    to 64) while it does, else halves the range below 1, then the last interval is bisected ``steps`` times; 0
    if even the lowest rate tried misses the target."""

    rates = {0.0: 0.0}  # multiplier -> the total mean rate of the workload it gives

    def ok(multiplier: float) -> bool:
        spec = replace(scenario.workload, rate_multiplier=multiplier)
        workload, models = prepare(replace(scenario, workload=spec))
        rates[multiplier] = workload.mean_rate_rps
        figures = summarize(run_policy(scenario, workload, models, name))
        return float(figures["slo_attainment"] or 0.0) >= target

    if ok(1.0):
        low, high = 1.0, 2.0
        while ok(high):
            if high >= 64.0:
                return rates[high]
            low, high = high, high * 2
    else:
        low, high = 0.0, 1.0
    for _ in range(steps):
        mid = (low + high) / 2
        low, high = (mid, high) if ok(mid) else (low, mid)
    return rates[low]
