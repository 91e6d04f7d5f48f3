"""Every Prometheus metric the gateway exports, defined once with its help text.

Names carry the ``warmserve_gateway_`` prefix and base units (seconds). The per-model demand (in flight,
queued, arrivals) is not kept twice: a collector reads it from the router at scrape time, so ``/metrics``
and ``/demand`` can never disagree. Each gateway owns its own :class:`CollectorRegistry`, so several can
live in one process (tests, the local runner).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from warmserve.protocol.demand_report import ModelDemand
from warmserve.protocol.metric_buckets import LATENCY_BUCKETS, TOKEN_BUCKETS

PREFIX = "warmserve_gateway"

DemandSource = Callable[[], Mapping[str, ModelDemand]]


class _DemandCollector(Collector):
    """Per-model demand, read from the router when scraped."""

    def __init__(self, source: DemandSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        demand = self._source()
        inflight = GaugeMetricFamily(
            f"{PREFIX}_inflight_requests", "Requests sent to an instance and not finished.", labels=["model"]
        )
        queued = GaugeMetricFamily(
            f"{PREFIX}_queued_requests", "Requests held for lack of a free instance.", labels=["model"]
        )
        arrivals = CounterMetricFamily(
            f"{PREFIX}_arrivals", "Valid requests received for a declared model.", labels=["model"]
        )
        for model, d in sorted(demand.items()):
            inflight.add_metric([model], d.inflight)
            queued.add_metric([model], d.queued)
            arrivals.add_metric([model], d.arrivals_total)
        yield from (inflight, queued, arrivals)


@dataclass
class GatewayMetrics:
    """The gateway's metrics, registered in a registry of its own."""

    demand: DemandSource
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        r = self.registry
        r.register(_DemandCollector(self.demand))
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Time from a streamed request's arrival at the gateway to its first event sent to the client.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            f"{PREFIX}_time_per_output_token_seconds",
            "Mean time between consecutive streamed events of one request, seen at the gateway.",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from a request's arrival at the gateway to the end of its response, held time included.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests answered, per declared model and HTTP status.",
            ["model", "status"],
            registry=r,
        )
        self.retries = Counter(
            f"{PREFIX}_upstream_retries",
            "Attempts that failed on an instance before anything was sent and were retried elsewhere.",
            ["model"],
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format for ``/metrics``."""
        return generate_latest(self.registry)
