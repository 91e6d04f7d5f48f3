"""The reactive layer under the forecast (docs/planning.md): how many instances each model needs right now.

Every tick the gateway's demand (in flight + queued) per model joins a short window; its mean is the
smoothed load L. With B requests per instance and n instances, the model scales out when
``L > scale_out_threshold·B·n``, to the fewest instances that keep L under that line
(``ceil(L / (scale_out_threshold·B))``), and in when fewer instances would stay under the scale-in line
at the highest L of the last ``scale_in_window_s``, to the fewest that do
(``ceil(peak / (scale_in_threshold·B))``): the instances kept are at most half full, so the load must grow
by more than half again before the next scale-out, and each new count is itself stable; a dip shorter
than the window demotes nothing (a demotion drains the instance's requests, and the next rise promoted
it again within seconds). Scaling in to the scale-out count instead left a zero-width band: with more
models than GPUs a load hovering at the line took a GPU from a model with requests in flight and gave it
back seconds later, over and over. Scale-in never removes an instance protected for ``protect_s`` after it was
started (nor does a starving model's preemption, unless the instance's model is idle: nothing in flight
nor queued), so a GPU handed from one model to another is not handed back sooner while it is used.
While any request waits or runs, a model keeps at least one instance: a request for a model with none
scales it out at once, without waiting for the window. ``min_instances`` and ``max_instances`` bound
every target.

The little state kept between ticks (the window, protection deadlines) is an explicit immutable
:class:`ReactiveState` passed in and returned: nothing hidden, so a step can be replayed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from warmserve.operator.planning.snapshot import Demand, ModelConfig, Snapshot, SnapshotError


@dataclass(frozen=True, slots=True)
class ReactiveConfig:
    """Constants of the reactive layer (defaults: docs/planning.md).

    ``tick_s``: seconds between planning steps. ``smoothing_window_s``: the span of demand samples
    averaged into the smoothed load. ``scale_out_threshold`` / ``scale_in_threshold``: fractions of
    B·n above / below which the model scales out / in (0: never in). ``scale_in_window_s``: how long
    the smoothed load must have stayed under the scale-in line (as Kubernetes' scale-down
    stabilization window). ``protect_s``: seconds a new
    instance is never scaled in nor demoted for another model, unless it is idle and the other
    model's requests wait with no instance (10 s: a GPU changes hands between two models at most once
    per 10 s; with 5 s a load near the thresholds switched one back within 7 s).
    """

    tick_s: float = 0.5
    smoothing_window_s: float = 2.0
    scale_out_threshold: float = 0.8
    scale_in_threshold: float = 0.5
    scale_in_window_s: float = 10.0
    protect_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("tick_s", "smoothing_window_s", "scale_out_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SnapshotError(f"reactive.{name}", "a finite number > 0", value)
        if not 0 <= self.scale_in_threshold < self.scale_out_threshold:
            raise SnapshotError(
                "reactive.scale_in_threshold",
                f"a number in [0, scale_out_threshold={self.scale_out_threshold})",
                self.scale_in_threshold,
            )
        for name in ("scale_in_window_s", "protect_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SnapshotError(f"reactive.{name}", "a finite number >= 0", value)

    @property
    def window(self) -> int:
        """Number of samples in the smoothing window (at least one)."""
        return max(1, round(self.smoothing_window_s / self.tick_s))

    @property
    def history(self) -> int:
        """Number of samples kept: the smoothing window, and the scale-in window's worth of them."""
        return self.window + max(0, round(self.scale_in_window_s / self.tick_s))


@dataclass(frozen=True, slots=True)
class ReactiveState:
    """What the reactive layer remembers between ticks: recent demand per model, and until when each
    recently started instance (by replica id) is protected from scale-in."""

    samples: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    protected_until: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", MappingProxyType(dict(self.samples)))
        object.__setattr__(self, "protected_until", MappingProxyType(dict(self.protected_until)))

    def is_protected(self, replica_id: str, now: float) -> bool:
        return self.protected_until.get(replica_id, -math.inf) > now


def observe(
    state: ReactiveState, snapshot: Snapshot, config: ReactiveConfig
) -> tuple[dict[str, float], ReactiveState]:
    """Add this tick's demand to the window; return the smoothed load per model and the new state.

    A model with no demand entry contributes a 0 sample; protection of replicas that no longer exist
    or whose deadline passed is forgotten.
    """
    samples = {
        name: (*state.samples.get(name, ()), snapshot.demand_of(name).total)[-config.history :]
        for name in snapshot.models
    }
    live = {r.id for r in snapshot.replicas}
    protected = {rid: t for rid, t in state.protected_until.items() if rid in live and t > snapshot.now}
    smoothed = {name: _mean(kept[-config.window :]) for name, kept in samples.items()}
    return smoothed, ReactiveState(samples, protected)


def recent_peaks(state: ReactiveState, config: ReactiveConfig) -> dict[str, float]:
    """The highest smoothed load of each model over the last ``scale_in_window_s`` (its window means at
    each of those ticks), from the samples :func:`observe` kept."""
    peaks = {}
    for name, kept in state.samples.items():
        ends = range(max(len(kept) - config.history + config.window, 1), len(kept) + 1)
        peaks[name] = max(_mean(kept[max(end - config.window, 0) : end]) for end in ends)
    return peaks


def _mean(values: tuple[float, ...]) -> float:
    return sum(values) / len(values)


def protect(
    state: ReactiveState, replica_ids: Iterable[str], now: float, config: ReactiveConfig
) -> ReactiveState:
    """The state with ``replica_ids`` (instances just started) protected for ``protect_s``."""
    until = dict(state.protected_until)
    until.update((rid, now + config.protect_s) for rid in replica_ids)
    return ReactiveState(state.samples, until)


@dataclass(frozen=True, slots=True)
class Target:
    """The number of instances a model should have now, and why (empty reason: hold steady)."""

    instances: int
    reason: str

    def __init__(self, instances: int, reason: str) -> None:  # written out: see snapshot.Replica.__init__
        object.__setattr__(self, "instances", instances)
        object.__setattr__(self, "reason", reason)


def target_instances(
    model: ModelConfig,
    load: float,
    demand: Demand,
    current: int,
    config: ReactiveConfig,
    peak: float | None = None,
) -> Target:
    """Instances the model needs now, from its smoothed ``load``, raw ``demand`` and ``current`` count;
    ``peak`` is its highest smoothed load over the scale-in window (:func:`recent_peaks`; default:
    ``load``, for a caller with no history)."""
    b = model.spec.max_concurrency
    name = model.spec.name
    peak = max(load, load if peak is None else peak)
    needed = math.ceil(load / (config.scale_out_threshold * b))  # > current exactly when L > threshold·B·n
    kept = math.ceil(peak / (config.scale_in_threshold * b)) if config.scale_in_threshold else current
    if demand.total > 0:
        needed, kept = max(needed, 1), max(kept, 1)  # requests are waiting now: never fewer than one
    target, reason = current, ""
    if needed > current:
        target = needed
        reason = (
            f"{name}: smoothed load {load:.2f} > {config.scale_out_threshold} x B={b} x {current} instances"
        )
        if current == 0 and demand.total > 0:
            reason = f"{name}: a request arrived and no instance exists (smoothed load {load:.2f})"
    elif kept < current:
        target = kept
        reason = (
            f"{name}: smoothed load at most {peak:.2f} over the last {config.scale_in_window_s:g} s"
            f" <= {config.scale_in_threshold} x B={b} x {kept} instances"
        )
    if target < model.min_instances:
        target, reason = model.min_instances, f"{name}: min_instances={model.min_instances}"
    if target > model.max_instances:
        target, reason = (
            model.max_instances,
            f"{name}: {reason}, capped at max_instances={model.max_instances}",
        )
    return Target(target, reason if target != current else "")
