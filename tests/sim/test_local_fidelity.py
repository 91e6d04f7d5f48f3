"""What the simulator models of the real serving path, so that it predicts a local run (issue 5): the
gateway's discovery poll, the serving path's measured cost, engine start-ups only where engines start,
and forecasts on the replay's (compressed) clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warmserve.operator.forecast.concurrency import LatencyModel
from warmserve.operator.forecast.traces import RateSeries
from warmserve.protocol.errors import InvalidFieldError
from warmserve.sim.catalog import ClusterSpec, catalog
from warmserve.sim.forecasts import TraceForecast
from warmserve.sim.simulator import SimConfig, Simulation
from warmserve.sim.workload import Workload
from warmserve.worker.timing import Tier, gpu_profile, load_seconds, model_shape, prefill_seconds

CLUSTER = ClusterSpec(nodes=1, gpus_per_node=1, host_cache_gib=0.0)
PROMPT, OUTPUT = 12, 4


def workload(
    arrivals: list[float], history: tuple[RateSeries, ...] = (), time_scale: float = 1.0
) -> Workload:
    n = len(arrivals)
    return Workload(
        ("m",),
        ("m",),
        np.array(arrivals),
        np.zeros(n, dtype=np.int64),
        np.full(n, PROMPT, dtype=np.int64),
        np.full(n, OUTPUT, dtype=np.int64),
        60.0,
        history,
        0.0,
        time_scale,
    )


def first_token(policy: str, **config: object) -> float:
    """First token of one request at 0.1 s for a model with no replica: a cold start at the next tick."""
    models = catalog(("m",), ("llama2-7b",), CLUSTER, 8, 1.0)
    run = Simulation(workload([0.1]), CLUSTER, models, policy, SimConfig(**config)).run()  # type: ignore[arg-type]
    return float(run.first_token[0])


def test_a_new_instance_is_routable_at_the_gateways_next_poll() -> None:
    prefill = prefill_seconds(model_shape("llama2-7b"), gpu_profile("h100"), 1, PROMPT)
    at_once = first_token("no-forecast", discovery_poll_s=0.0)
    polled = first_token("no-forecast", discovery_poll_s=0.5)
    serving = at_once - prefill  # when the replica started serving
    seen = polled - prefill
    assert 0 < seen - serving <= 0.5
    assert (seen / 0.5 - 0.5) == pytest.approx(round(seen / 0.5 - 0.5))  # a poll, half a tick off the ticks


def test_the_serving_path_cost_is_added_to_every_first_token() -> None:
    models = catalog(("m",), ("llama2-7b",), CLUSTER, 8, 1.0)
    arrivals = [0.1, 3.0, 3.001, 3.002, 7.5]
    runs = [
        Simulation(workload(arrivals), CLUSTER, models, "no-forecast", SimConfig(request_overhead_s=o)).run()
        for o in (0.0, 0.007)
    ]
    assert np.allclose(runs[1].first_token - runs[0].first_token, 0.007)


def test_engine_start_is_paid_only_where_engines_start_per_replica() -> None:
    start = gpu_profile("h100").engine_start_s
    config = {"discovery_poll_s": 0.0, "hold_timeout_s": 60.0}
    per_replica = first_token("autoscale", **config)  # the baseline's own default: engines per replica
    universal = first_token("autoscale", per_replica_engines=False, **config)
    assert per_replica - universal == pytest.approx(start)
    assert first_token("no-forecast", per_replica_engines=True, **config) == pytest.approx(per_replica)
    load = load_seconds(model_shape("llama2-7b").weight_bytes, Tier.DISK, gpu_profile("h100"))
    assert universal > 0.5 + load  # the cold start ordered at the 0.5 s tick, then the load


@pytest.mark.parametrize("field", ["discovery_poll_s", "request_overhead_s"])
def test_bad_path_timings_are_named(field: str) -> None:
    with pytest.raises(InvalidFieldError, match=field):
        SimConfig(**{field: -1.0})  # type: ignore[arg-type]


def test_forecasts_take_concurrency_on_the_replays_clock() -> None:
    """A trace replayed k times faster carries k times the requests per second, so k times the
    concurrency; and its windows are k times shorter, so a window's peak is nearer its mean."""
    latency = LatencyModel(0.0, 0.01, 0.0, 10.0)  # 0.1 s a request
    rate = 0.5  # requests per trace second
    history = (RateSeries("m", -86_400.0, 600.0, np.full(2 * 144, rate), np.ones(2 * 144)),)

    def forecast(scale: float) -> tuple[float, float]:
        source = TraceForecast(workload([], history, scale), {"m": latency}, oracle=True, horizon_s=0.0)
        f = source.forecasts(0.0)["m"]
        return f.mean, f.peak

    for scale in (1.0, 60.0):
        mean, peak = forecast(scale)
        assert mean == pytest.approx(rate * scale * 0.1)
        z = math.sqrt(2 * math.log(600.0 / scale / 0.1))
        assert peak == pytest.approx(mean + z * math.sqrt(mean))
