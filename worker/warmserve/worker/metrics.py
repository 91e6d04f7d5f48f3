"""Every Prometheus metric a worker exports, defined once with its help text (vLLM's registry style).

Names carry the ``warmserve_worker_`` prefix and base units (seconds, bytes). Each worker owns its own
:class:`CollectorRegistry`, so several workers can live in one process (tests, the local runner) without
clashing; ``render()`` gives the text exposition format for ``/metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from warmserve.protocol.metric_buckets import LATENCY_BUCKETS, TOKEN_BUCKETS

PREFIX = "warmserve_worker"


@dataclass
class WorkerMetrics:
    """The worker's metrics, registered in a registry of its own."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        r = self.registry
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Time from a request's arrival at the worker to its first generated token.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            f"{PREFIX}_time_per_output_token_seconds",
            "Mean time between consecutive output tokens of one request.",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            f"{PREFIX}_inflight_requests", "Requests being served now, per model.", ["model"], registry=r
        )
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests finished, per model and outcome.",
            ["model", "outcome"],
            registry=r,
        )
        self.load_seconds = Histogram(
            f"{PREFIX}_load_seconds",
            "Time to copy a replica's weights into its slot (prewarm or cold start).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.promotion_seconds = Histogram(
            f"{PREFIX}_promotion_seconds",
            "Time to turn a prewarmed replica into a serving one (no weight copy).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pool_used = Gauge(
            f"{PREFIX}_pool_used_bytes", "Pool memory mapped into slots, per GPU.", ["gpu"], registry=r
        )
        self.pool_free = Gauge(
            f"{PREFIX}_pool_free_bytes", "Pool memory not mapped, per GPU.", ["gpu"], registry=r
        )
        self.pool_lent = Gauge(
            f"{PREFIX}_pool_lent_bytes",
            "Free KV space of serving replicas lent to prewarmed ones, per GPU.",
            ["gpu"],
            registry=r,
        )
        self.transitions = Counter(
            f"{PREFIX}_replica_transitions",
            "Replica state changes, by model and the states left and entered.",
            ["model", "from_state", "to_state"],
            registry=r,
        )
        self.desired_rejected = Counter(
            f"{PREFIX}_desired_state_rejected",
            "Desired-state documents rejected as malformed (the previous state was kept).",
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format for ``/metrics``."""
        return generate_latest(self.registry)
