"""What the simulator models of the real serving path, so that it predicts a local run (issue 5): the
gateway's discovery poll, the serving path's measured cost, engine start-ups only where engines start,
and forecasts on the replay's (compressed) clock. And what the two share, so that comparing them measures
the model, not the bookkeeping: one summary of the same requests, one forecast of the same replay."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warmserve.local.arrivals import ReplaySlice, replay_rates
from warmserve.local.client import Outcome
from warmserve.local.forecasts import request_latency, trace_forecasts
from warmserve.local.results import summarize
from warmserve.local.traces import load_rates
from warmserve.operator.forecast.concurrency import LatencyModel
from warmserve.operator.forecast.traces import RateSeries
from warmserve.protocol.errors import InvalidFieldError
from warmserve.replay.figures import request_figures
from warmserve.replay.forecasts import ForecastMode
from warmserve.sim.catalog import ClusterSpec, catalog
from warmserve.sim.simulator import SimConfig, Simulation, trace_forecast
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
        source = trace_forecast(workload([], history, scale), {"m": latency}, ForecastMode.ORACLE, 0.0)
        f = source.forecasts(0.0)["m"]
        return f.mean, f.peak

    for scale in (1.0, 60.0):
        mean, peak = forecast(scale)
        assert mean == pytest.approx(rate * scale * 0.1)
        z = math.sqrt(2 * math.log(600.0 / scale / 0.1))
        assert peak == pytest.approx(mean + z * math.sqrt(mean))


def test_online_forecasts_keep_the_traces_daily_period_on_a_faster_clock() -> None:
    """The forecaster's period is a day of *trace* time: replayed 60 times faster, the one-step forecast of
    a day busy at noon is the same, in 60 times the concurrency (it was a day of replay seconds, 86,400
    compressed windows, so no season was ever seen)."""
    latency = LatencyModel(0.0, 0.01, 0.0, 10.0)  # 0.1 s a request
    day = np.full(144, 0.2)
    day[72:78] = 5.0  # busy 12:00-13:00
    start = -(3 * 86_400.0 + 12 * 3600.0)  # the replay starts at noon of the fourth day
    history = (RateSeries("m", start, 600.0, np.tile(day, 4), np.ones(4 * 144)),)

    def noon(scale: float) -> float:
        source = trace_forecast(workload([], history, scale), {"m": latency}, ForecastMode.ONE_STEP, 0.0)
        return source.forecasts(0.0)["m"].mean / scale

    assert noon(1.0) > 0.4  # the busy hour foreseen from the days before
    assert noon(60.0) == pytest.approx(noon(1.0))


def test_the_online_forecast_is_made_by_the_forecaster_named() -> None:
    """A day busy at noon: the paper's forecaster foresees the busy hour from the days before, the last
    value does not; an unknown name is refused, naming the accepted ones."""
    latency = LatencyModel(0.0, 0.01, 0.0, 10.0)  # 0.1 s a request
    day = np.full(144, 0.2)
    day[72:78] = 5.0  # busy 12:00-13:00
    history = (RateSeries("m", -(3 * 86_400.0 + 12 * 3600.0), 600.0, np.tile(day, 4), np.ones(4 * 144)),)

    def noon(name: str) -> float:
        source = trace_forecast(workload([], history, 1.0), {"m": latency}, ForecastMode.ONE_STEP, 0.0, name)
        return source.forecasts(0.0)["m"].mean

    assert noon("warmserve") > 0.4
    assert noon("last-value") == pytest.approx(0.2 * 0.1)
    with pytest.raises(InvalidFieldError, match="last-value"):
        SimConfig(forecaster="prophet")


def test_local_and_simulated_requests_are_summarised_by_one_rule() -> None:
    """The same requests as a local replay's outcomes and as a simulator's arrays give the same figures."""
    ttfts = [0.3, None, 0.05, 2.5, None, 0.7]
    outcomes = [
        Outcome("m", 0.0, t, (t or 1.0) + 0.2, 200 if t is not None else 503, "" if t is not None else "503")
        for t in ttfts
    ]
    arrival = np.arange(len(ttfts), dtype=float)
    first = np.array([a + t if t is not None else np.nan for a, t in zip(arrival, ttfts, strict=True)])
    simulated = request_figures(arrival, first, first + 0.2, np.full(len(ttfts), 1.0))
    assert summarize("p", outcomes, 1.0, 0, 0).figures == simulated
    assert simulated.ttft_p99_s is None  # two of six never served: the tail is infinite in both


def test_the_simulator_can_forecast_a_local_replay_as_the_local_run_does() -> None:
    """Given the local replay's rates, clock and forecast mode, the simulator's source is the local one."""
    series = load_rates(None)
    replay = ReplaySlice(7 * 86_400.0, 86_400.0, compress=1440.0, rps=40.0)
    local = trace_forecasts(series, replay, {s.model: 0.12 for s in series}, horizon_s=3.7)
    history = replay_rates(series, replay)
    simulated = trace_forecast(
        Workload(
            ("m",),
            ("m",),
            np.zeros(0),
            *([np.zeros(0, dtype=np.int64)] * 3),
            60.0,
            history,
            replay.start_sec,
            replay.compress,
        ),
        {s.model: request_latency(0.12) for s in series},
        ForecastMode.PAST_ONLY,
        3.7,
    )
    for now in (0.5, 20.0, 41.3):
        assert simulated.forecasts(now) == local.forecasts(now) != {}
