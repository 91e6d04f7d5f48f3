"""Whether a replay offers more requests than the local cluster could serve, and the warning that says so.

A replay plays ``--hours`` of trace in ``--duration`` seconds at a mean of ``--rps``; its peak is the
mean times the slice's peak-to-mean ratio, so a slice the trace fills unevenly (a trace with data in a
few minutes of the day replayed as a whole day) packs its requests into a burst however long the replay
(a longer ``--duration`` replays more requests at the same rates).

The offered peak is the most arrivals in any :data:`WINDOW_S` span (or SLO span, if longer) per second.
What the cluster can serve is every GPU full of one model's replicas (as many as its weights fit in the
pool, KV not counted), each running B requests at a time, each request taking its model's latency alone
on an instance (:meth:`LocalSetup.latency_s`); over the replay's mix of models, the GPUs divided by the
mean GPU-seconds a request needs. Batching only slows requests down and KV only takes room, so this is an
upper bound: a replay offering more overloads even a cluster warm from the first second, and its figures
measure the overload, not the policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from warmserve.local.arrivals import Arrival
from warmserve.local.setup import GIB, LocalSetup

#: The shortest span the offered peak is measured over (seconds of the replay).
WINDOW_S = 1.0


@dataclass(frozen=True, slots=True)
class ReplayLoad:
    """A replay's offered load beside what the cluster can serve (requests per local second)."""

    offered_peak_rps: float
    offered_mean_rps: float
    window_s: float
    capacity_rps: float
    gpus: int
    max_concurrency: int

    @property
    def overloaded(self) -> bool:
        return self.offered_peak_rps > self.capacity_rps

    def warning(self) -> str | None:
        """One line naming the figures and the options that change them; None when the cluster keeps up."""
        if not self.overloaded:
            return None
        ratio = self.offered_peak_rps / self.offered_mean_rps
        return (
            f"warmserve local: warning: the replay offers up to {self.offered_peak_rps:.0f} req/s (its "
            f"busiest {self.window_s:g} s; {self.offered_mean_rps:.1f} req/s on average) but its {self.gpus} "
            f"GPUs serve at most {self.capacity_rps:.0f} req/s (full of replicas of {self.max_concurrency} "
            "requests each): requests will queue past the SLO. Lower --rps, pick a --day/--hours the trace "
            f"fills evenly (its peak is {ratio:.1f}x its mean), or add --workers/--gpus"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "offered_peak_rps": self.offered_peak_rps,
            "offered_mean_rps": self.offered_mean_rps,
            "capacity_rps": self.capacity_rps,
            "overload_warning": self.warning(),
        }


def replay_load(arrivals: Sequence[Arrival], setup: LocalSetup, duration_s: float) -> ReplayLoad:
    """The load of ``arrivals`` (a ``duration_s``-long replay) on ``setup``; an empty replay offers 0 (and
    its capacity is at the models' plain mean)."""
    window = max(WINDOW_S, setup.slo_s)
    times = np.array([a.at_s for a in arrivals], dtype=float)
    in_window = np.searchsorted(times, times + window) - np.arange(len(times))
    cost = {m: gpu_seconds(setup, m) for m in setup.models}
    mean_cost = float(np.mean([cost[a.model] for a in arrivals] or list(cost.values())))
    gpus = setup.workers * setup.gpus
    return ReplayLoad(
        offered_peak_rps=float(in_window.max(initial=0)) / window,
        offered_mean_rps=len(arrivals) / duration_s,
        window_s=window,
        capacity_rps=gpus / mean_cost,  # every cost is > 0 (latency_s is)
        gpus=gpus,
        max_concurrency=setup.max_concurrency,
    )


def gpu_seconds(setup: LocalSetup, model: str) -> float:
    """The least GPU time one request of ``model`` takes: its latency shared by the requests that run at
    once on a GPU full of its replicas (at least one replica, even one larger than the pool)."""
    replicas = max(1, setup.gpu_memory_gib * GIB // setup.spec(model).shard_bytes)
    return setup.latency_s(model) / (replicas * setup.max_concurrency)
