"""A model's history restored from a real Prometheus server (the ``prometheus`` binary) scraping the gateway's
real metrics exposition: the windows come back with the mean and peak of the in-flight plus queued
requests; a Prometheus that cannot be reached is an :class:`UnavailableError`, not a crash."""

from __future__ import annotations

import asyncio
import itertools
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import pytest

from e2e.harness.cluster import free_port
from warmserve.gateway.metrics import GatewayMetrics
from warmserve.operator.kube.forecasting import prometheus_history
from warmserve.operator.resources import ForecastSettings
from warmserve.protocol.demand_report import ModelDemand
from warmserve.protocol.errors import UnavailableError

pytestmark = pytest.mark.slow
PROMETHEUS = shutil.which("prometheus")
MODEL = "llama-2-7b-chat"
WINDOW_S = 4


@pytest.fixture
def gateway_metrics() -> Iterator[str]:
    """The gateway's ``/metrics`` exposition, served over HTTP; the model's demand alternates between
    2 (1 in flight + 1 queued) and 8 (4 + 4) from one scrape to the next."""
    demand = itertools.cycle([ModelDemand(1, 1, 0), ModelDemand(4, 4, 0)])
    metrics = GatewayMetrics(lambda: {MODEL: next(demand)})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def prometheus(gateway_metrics: str, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping the gateway's metrics every second; its URL."""
    if PROMETHEUS is None:
        pytest.skip("no prometheus binary (Debian package prometheus; `make install` installs it)")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: gateway, static_configs: [{{targets: ['{gateway_metrics}']}}]}}]\n"
    )
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_the_history_comes_back_from_prometheus_as_windows_of_mean_and_peak(prometheus: str) -> None:
    settings = ForecastSettings("last-value", WINDOW_S, WINDOW_S, "prometheus", 600, prometheus)
    deadline = time.monotonic() + 40.0
    async with aiohttp.ClientSession() as session:
        while True:  # until two whole windows are scraped (Prometheus starts, then scrapes every second)
            try:
                history = await prometheus_history(session, MODEL, settings, time.time())
            except UnavailableError:
                history = None  # not listening yet
            full = (
                []
                if history is None
                else [p for m, p in zip(history.mean, history.peak, strict=True) if p == 8.0]
            )
            if len(full) >= 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
    assert history is not None and len(full) >= 2, history
    assert history.window_s == WINDOW_S and history.end <= time.time() // WINDOW_S  # closed windows only
    finite = [(m, p) for m, p in zip(history.mean, history.peak, strict=True) if math.isfinite(p)]
    assert all(2.0 <= m <= p <= 8.0 for m, p in finite)
    assert any(2.0 < m < 8.0 for m, _ in finite)  # both values within one window: a mean between them


async def test_an_unreachable_prometheus_is_unavailable_naming_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    settings = ForecastSettings("last-value", WINDOW_S, WINDOW_S, "prometheus", 600, url)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(UnavailableError, match=f"Prometheus at {url}"):
            await prometheus_history(session, MODEL, settings, time.time())
