"""Histogram buckets shared by every component's Prometheus metrics, so that the gateway's latencies and
the workers' can be read on one dashboard and compared bucket for bucket."""

from __future__ import annotations

#: Latency buckets from 1 ms to ~2 min: TTFT spans a warm hit (ms) to a cold start (minutes).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: Time-per-output-token buckets, 0.5 ms to 1 s.
TOKEN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
