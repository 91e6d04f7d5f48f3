"""A scenario (workload + cluster + models + run constants) and running policies on it side by side.

:func:`run_policy` runs one policy by name; :func:`max_rate_at_slo` searches the highest request rate a
policy serves with at least ``target`` SLO attainment: it doubles the rate multiplier until the policy
fails, then bisects ``steps`` times; every run uses the same seed, so only the rate changes.
:func:`gpus_at_slo` is the capacity plan: a policy's SLO attainment on clusters of several sizes (the same
workload and models, more or fewer nodes), and the smallest that attains ``target``.

The models are the trace's synthetic ones costed by ``shapes`` (cycled), or a log's own models sized by
the ``sizes`` file and guesses (:mod:`.sizes`); each option is refused where it makes no sense
(:func:`~warmserve.sim.workload.refuse_options`).
"""

from __future__ import annotations

import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from warmserve.operator.planning.snapshot import ModelConfig
from warmserve.operator.policies.registry import NAMES
from warmserve.protocol.errors import InvalidFieldError
from warmserve.sim.catalog import DEFAULT_SHAPES, ClusterSpec, catalog, parse_shape, sized_catalog
from warmserve.sim.results import summarize
from warmserve.sim.simulator import RunResult, SimConfig, Simulation
from warmserve.sim.sizes import ModelSize, read_sizes, sizes_for
from warmserve.sim.workload import Workload, WorkloadSpec, build_workload, refuse_options, trace_kind

#: The policies a default run compares.
DEFAULT_POLICIES: tuple[str, ...] = ("warmserve", "autoscale", "muxserve", "dedicated", "oracle")
SIM_POLICIES: tuple[str, ...] = NAMES
#: The SLO attainment the sweeps hold a policy to.
SLO_TARGET = 0.99


@dataclass(frozen=True)
class Scenario:
    """Everything a run needs but the policy."""

    workload: WorkloadSpec
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    shapes: tuple[str, ...] | None = None  # None: DEFAULT_SHAPES (synthetic models only)
    max_concurrency: int = 16
    slo_ttft_s: float = 2.0
    sim: SimConfig = field(default_factory=SimConfig)
    sizes: Path | None = None  # a log's own models: the sizes file (see .sizes)


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
    for shape in scenario.shapes or ():
        parse_shape(shape)
    table = read_sizes(scenario.sizes) if scenario.sizes is not None else {}
    given = {"shapes": scenario.shapes, "model-sizes": scenario.sizes}
    kind = trace_kind(scenario.workload.trace, scenario.workload.reader)
    refuse_options(kind, {option: value for option, value in given.items() if value is not None})
    workload = build_workload(scenario.workload)
    c = scenario.cluster
    if workload.kind == "models":
        sizes = sizes_for(workload.models, table, c.gpu, c.gpus_per_node)
        return workload, sized_catalog(sizes, c, scenario.max_concurrency, scenario.slo_ttft_s)
    shapes = scenario.shapes or DEFAULT_SHAPES
    return workload, catalog(workload.models, shapes, c, scenario.max_concurrency, scenario.slo_ttft_s)


def model_sizes(scenario: Scenario, workload: Workload) -> dict[str, ModelSize]:
    """The sizes a log's own models are costed with (the file's, or guesses saying so); empty for
    synthetic models."""
    if workload.kind != "models":
        return {}
    table = read_sizes(scenario.sizes) if scenario.sizes is not None else {}
    return sizes_for(workload.models, table, scenario.cluster.gpu, scenario.cluster.gpus_per_node)


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


def max_rate_at_slo(scenario: Scenario, name: str, target: float = SLO_TARGET, steps: int = 4) -> float:
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


def gpus_at_slo(
    scenario: Scenario,
    workload: Workload,
    models: dict[str, ModelConfig],
    name: str,
    gpus: Sequence[int],
    target: float = SLO_TARGET,
) -> tuple[int | None, dict[int, float]]:
    """``name``'s SLO attainment on clusters of each total GPU count in ``gpus`` (whole nodes of the
    scenario's GPUs per node; any other count raises :class:`InvalidFieldError` on ``sweep-gpus``), and the
    smallest count that attains ``target`` (``None`` if none does). The workload and models are the same
    for every size: only the number of nodes changes."""
    per_node = scenario.cluster.gpus_per_node
    bad = [count for count in gpus if count < per_node or count % per_node]
    if bad or not gpus:
        raise InvalidFieldError("sweep-gpus", f"whole nodes: multiples of --gpus ({per_node})", bad or gpus)
    attained = {}
    for count in sorted(set(gpus)):
        cluster = replace(scenario.cluster, nodes=count // per_node)
        run = Simulation(workload, cluster, models, name, scenario.sim).run()
        attained[count] = float(summarize(run)["slo_attainment"] or 0.0)
    smallest = next((count for count, share in attained.items() if share >= target), None)
    return smallest, attained
