"""Forecasts for a local replay: the replay library's source over the trace's own past, in the replay's time
and load.

The replayed trace is compressed in time and rescaled in load (:func:`~.arrivals.replay_rates`); the source
takes the *whole* trace so mapped, so the days before the replayed slice become the forecaster's history
(the shipped sample's 14 days replayed from day 7 give it 7 days). It predicts the windows of the horizon
from the windows already over, nothing later (:class:`~warmserve.replay.forecasts.ForecastMode`
``past-only``): the load a gateway would have measured had it served the trace. Concurrency per window
comes from each model's local mean latency of a request (Little's law plus a Gaussian peak, with cv = 1 as
replayed). The scheduler reads it on the replay's clock (:class:`~warmserve.replay.forecasts.ReplayClock`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from warmserve.local.arrivals import ReplaySlice, replay_rates
from warmserve.operator.forecast.concurrency import LatencyModel
from warmserve.operator.forecast.traces import RateSeries
from warmserve.replay.forecasts import ForecastMode, TraceForecast


def trace_forecasts(
    series: Sequence[RateSeries], replay: ReplaySlice, latency_s: Mapping[str, float], horizon_s: float
) -> TraceForecast:
    """The forecast source of ``replay`` for the models of ``latency_s`` (seconds per request)."""
    latency = {model: request_latency(seconds) for model, seconds in latency_s.items()}
    rates = replay_rates(series, replay)
    return TraceForecast(
        rates,
        replay.start_sec,
        replay.compress,
        replay.duration_s,
        latency,
        horizon_s,
        ForecastMode.PAST_ONLY,
    )


def request_latency(seconds: float) -> LatencyModel:
    """A latency model in which every request takes ``seconds``, whatever its lengths."""
    return LatencyModel(
        prefill_sec_per_token=0.0, decode_sec_per_token=seconds, mean_input_tokens=0.0, mean_output_tokens=1.0
    )
