"""Every Prometheus metric the operator exports, defined once with its help text (docs/operator.md,
"Metrics").

Names carry the ``warmserve_operator_`` prefix and base units (seconds; concurrency in requests). The
operator owns its own :class:`CollectorRegistry` (:attr:`OperatorMetrics.registry`), which its HTTP server
serves at ``/metrics``; several operators can live in one process (tests). Counting never raises into the
caller: a tick, a handler or an Event write is counted from data it already has.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from warmserve.operator.planning.plan import (
    ColdStart,
    Demote,
    Evict,
    LendKV,
    Prewarm,
    Promote,
    ReclaimKV,
)
from warmserve.operator.scheduler import Tick
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.metric_buckets import LATENCY_BUCKETS

PREFIX = "warmserve_operator"
#: Why a tick decided nothing: the cluster could not be observed or written (``unavailable``), or the
#: snapshot was refused and no worker could be blamed (``held``).
SKIP_REASONS = ("unavailable", "held")
#: Each action type's label value on ``warmserve_operator_plan_actions_total``.
ACTION_LABELS: dict[type, str] = {
    Prewarm: "prewarm",
    ColdStart: "cold_start",
    Promote: "promote",
    Demote: "demote",
    Evict: "evict",
    LendKV: "lend_kv",
    ReclaimKV: "reclaim_kv",
}


class OperatorMetrics:
    """The operator's metrics, registered in a registry of their own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.reconciles = Counter(
            f"{PREFIX}_reconciles",
            "Handler runs (changes, resumes and timers), by resource kind.",
            ["kind"],
            registry=r,
        )
        self.errors = Counter(
            f"{PREFIX}_errors",
            "Handler runs that failed, by resource kind; Event writes that failed (kind Event).",
            ["kind"],
            registry=r,
        )
        self.ticks = Counter(f"{PREFIX}_ticks", "Scheduler ticks run, skipped ones included.", registry=r)
        self.tick_duration = Histogram(
            f"{PREFIX}_tick_duration_seconds",
            "Time of one scheduler tick: observing the cluster, planning and writing the desired states.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.skipped = Counter(
            f"{PREFIX}_ticks_skipped",
            "Ticks that decided nothing: the cluster unavailable, or the snapshot refused (held).",
            ["reason"],
            registry=r,
        )
        self.excluded = Gauge(
            f"{PREFIX}_workers_excluded",
            "Workers whose report the last tick left out (the snapshot refused it).",
            registry=r,
        )
        self.actions = Counter(
            f"{PREFIX}_plan_actions",
            "Actions the scheduler's plans decided, by action type.",
            ["action"],
            registry=r,
        )
        self.prewarm_hits = Counter(
            f"{PREFIX}_prewarm_hits",
            "Instances started from a prewarmed (or loading) replica's weights: Promote actions.",
            ["model"],
            registry=r,
        )
        self.cold_starts = Counter(
            f"{PREFIX}_cold_starts",
            "Instances started with no prewarmed replica: ColdStart actions.",
            ["model"],
            registry=r,
        )
        self.hit_ratio = Gauge(
            f"{PREFIX}_prewarm_hit_ratio",
            "Prewarm hits over hits plus cold starts since the operator started (0 before any).",
            registry=r,
        )
        self.hit_ratio.set_function(self._hit_ratio)
        self.forecast_error = Gauge(
            f"{PREFIX}_forecast_peak_error_requests",
            "|forecast peak - actual peak| of a model's last closed forecast window, in requests.",
            ["model"],
            registry=r,
        )
        self.forecast_peak = Gauge(
            f"{PREFIX}_forecast_peak_requests",
            "Peak concurrency forecast for a model's last closed forecast window, in requests.",
            ["model"],
            registry=r,
        )
        self.actual_peak = Gauge(
            f"{PREFIX}_actual_peak_requests",
            "Peak concurrency seen in a model's last closed forecast window, in requests.",
            ["model"],
            registry=r,
        )
        self.events_dropped = Counter(
            f"{PREFIX}_events_dropped",
            "Decision Events not written because the Event queue was full.",
            registry=r,
        )
        self._hits = 0
        self._colds = 0
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)  # every reason and action shows at 0 before it first happens
        for action in ACTION_LABELS.values():
            self.actions.labels(action)

    def count_tick(self, tick: Tick) -> None:
        """Count one tick of the scheduler loop: its duration, whether it was skipped and why, the
        workers it left out, and every action of its plan."""
        self.ticks.inc()
        self.tick_duration.observe(tick.duration_s)
        decision = tick.decision
        if tick.skipped:
            self.skipped.labels("unavailable").inc()
        elif decision is not None and decision.held:
            self.skipped.labels("held").inc()
        if decision is None:
            return
        self.excluded.set(len(decision.excluded))
        for action in decision.plan:
            self.actions.labels(ACTION_LABELS[type(action)]).inc()
            if isinstance(action, Promote):
                self._hits += 1
                self.prewarm_hits.labels(action.model).inc()
            elif isinstance(action, ColdStart):
                self._colds += 1
                self.cold_starts.labels(action.model).inc()

    def record_forecast_error(self, model: str, forecast_peak: float, actual_peak: float) -> None:
        """Set ``model``'s forecast and actual peak and their error: the forecast source's adapter calls
        this once a window has closed, with the peak forecast for it and the peak demand seen. A value that
        is not a finite number >= 0 raises :class:`InvalidFieldError` naming it (nothing is set)."""
        for name, value in (("forecast_peak", forecast_peak), ("actual_peak", actual_peak)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise InvalidFieldError(name, "a finite number >= 0", value)
        self.forecast_peak.labels(model).set(forecast_peak)
        self.actual_peak.labels(model).set(actual_peak)
        self.forecast_error.labels(model).set(abs(forecast_peak - actual_peak))

    def forget_model(self, model: str) -> None:
        """Drop a model's forecast gauges (the model is no longer served); unknown: nothing happens."""
        for gauge in (self.forecast_error, self.forecast_peak, self.actual_peak):
            with contextlib.suppress(KeyError):
                gauge.remove(model)

    def counted(self, kind: str, handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """``handler``, counted as a reconcile of ``kind`` and, when it raises, as an error (re-raised)."""

        async def run(**kwargs: object) -> None:
            self.reconciles.labels(kind).inc()
            try:
                await handler(**kwargs)
            except Exception:
                self.errors.labels(kind).inc()
                raise

        return run

    def _hit_ratio(self) -> float:
        started = self._hits + self._colds
        return self._hits / started if started else 0.0
