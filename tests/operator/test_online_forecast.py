"""The operator's online forecast source: windows of observed demand, the bounded history, fits run away
from the tick at the forecaster's cadence (real forecasters), the fallback while there is no fit,
``forecaster: none``, models coming and going, and the history's JSON and Prometheus forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warmserve.operator.forecast.history import (
    History,
    history_from_json,
    history_from_prometheus,
    prometheus_queries,
)
from warmserve.operator.online_forecast import ForecastCheck, OnlineForecast, refit_period
from warmserve.operator.planning.snapshot import Demand, Forecast
from warmserve.operator.resources import ForecastSettings
from warmserve.protocol.errors import InvalidInputError


def settings(
    forecaster: str = "last-value", window: int = 10, horizon: int = 10, retention: int = 50
) -> ForecastSettings:
    return ForecastSettings(forecaster, window, horizon, "configMap", retention)


def run_fits(source: OnlineForecast) -> int:
    jobs = source.due()
    for job in jobs:
        source.install(job, job.run())
    return len(jobs)


def feed(source: OnlineForecast, model: str, samples: list[tuple[float, float]]) -> None:
    for now, inflight in samples:
        source.observe(now, {model: Demand(inflight)})


def test_a_window_closes_with_the_mean_and_peak_of_its_samples_queued_included() -> None:
    source = OnlineForecast()
    source.set_models({"m": settings()})
    source.observe(100.0, {"m": Demand(2, queued=2)})  # total 4
    source.observe(105.0, {"m": Demand(0)})
    source.observe(109.9, {"m": Demand(2)})
    assert source.history("m") == History(10, 0)
    source.observe(110.0, {"m": Demand(1)})  # the next window: window 10 closes
    assert source.history("m") == History(10, 10, (2.0,), (4.0,))
    source.observe(131.0, {})  # window 11 closes; 12 saw no tick (a gap); absent demand counts 0
    source.observe(140.0, {})
    history = source.history("m")
    assert history is not None and history.first == 10 and history.peak[:2] == (4.0, 1.0)
    assert math.isnan(history.mean[2]) and history.mean[3] == 0.0


def test_the_history_keeps_only_the_retention() -> None:
    source = OnlineForecast()
    source.set_models({"m": settings(retention=30)})  # three windows
    feed(source, "m", [(10.0 * k, float(k)) for k in range(8)])
    assert source.history("m") == History(10, 4, (4.0, 5.0, 6.0), (4.0, 5.0, 6.0))


def test_the_forecast_repeats_what_is_seen_until_a_fit_then_uses_the_fit() -> None:
    source = OnlineForecast()
    source.set_models({"m": settings(forecaster="warmserve")})
    assert source.forecasts(0.0) == {}  # nothing seen
    source.observe(0.0, {"m": Demand(3)})
    assert source.forecasts(0.0) == {"m": Forecast(3.0, 3.0)}  # the open window so far
    feed(source, "m", [(5.0, 5.0), (10.0, 1.0)])
    assert source.forecasts(10.0) == {"m": Forecast(4.0, 5.0)}  # the last closed window
    assert "no fit yet" in source.note("m")
    assert run_fits(source) == 1 and run_fits(source) == 0  # one fit, not one per round
    assert "warmserve fitted on 1 windows" in source.note("m") and "less than a day" in source.note("m")
    feed(source, "m", [(20.0, 7.0)])  # window 1 (mean 1) closes: warmserve has nothing to refit
    assert run_fits(source) == 0 and source.forecasts(20.0)["m"].mean < 4.0  # it reads window 1


def test_a_closed_window_is_checked_against_the_peak_forecast_for_it_before_it_started() -> None:
    source = OnlineForecast()
    source.set_models({"m": settings(window=10, horizon=5)})
    source.observe(0.0, {"m": Demand(3)})
    assert source.forecasts(0.0)["m"].peak == 3.0  # window 0's first forecast: it had none before
    source.observe(4.0, {"m": Demand(6)})
    assert source.forecasts(4.0)["m"].peak == 6.0  # the horizon (to 9) does not reach window 1
    source.observe(6.0, {"m": Demand(2)})
    assert source.forecasts(6.0)["m"].peak == 6.0  # reaches window 1: its forecast so far
    source.observe(8.0, {"m": Demand(8)})
    assert source.forecasts(8.0)["m"].peak == 8.0  # the newest before window 1 starts
    assert source.checked() == []  # nothing closed yet
    source.observe(10.0, {"m": Demand(1)})  # window 0 closes: forecast 3 (its first), peak 8
    assert source.checked() == [ForecastCheck("m", 3.0, 8.0)] and source.checked() == []
    source.forecasts(10.0)  # window 1 keeps the forecast made before it started
    source.observe(20.0, {"m": Demand(0)})
    assert source.checked() == [ForecastCheck("m", 8.0, 1.0)]
    source.observe(50.0, {"m": Demand(0)})  # window 2 closes with no forecast made for it: not checked
    assert source.checked() == []


def test_the_fit_runs_outside_the_tick_and_a_stale_job_is_dropped() -> None:
    source = OnlineForecast()
    source.set_models({"m": settings()})
    feed(source, "m", [(0.0, 2.0), (10.0, 2.0)])
    (job,) = source.due()
    assert source.due() == []  # one job at a time per model
    source.set_models({"m": settings(forecaster="ets")})  # changed meanwhile
    source.install(job, job.run())
    assert "no fit yet" in source.note("m")


def test_forecaster_none_gives_no_forecast_and_no_fit() -> None:
    source = OnlineForecast()
    source.set_models({"m": settings(forecaster="none")})
    feed(source, "m", [(0.0, 2.0), (10.0, 2.0)])
    assert source.forecasts(10.0) == {} and source.due() == []
    assert source.history("m") == History(10, 0, (2.0,), (2.0,))  # still observed: kept for a change


def test_models_come_and_go_and_a_new_window_starts_afresh() -> None:
    source = OnlineForecast()
    assert source.set_models({"a": settings(), "b": settings()}) == {"a", "b"}
    feed(source, "a", [(0.0, 1.0), (10.0, 1.0)])
    assert source.set_models({"a": settings(), "b": settings()}) == set()
    assert source.set_models({"a": settings(window=5)}) == {"a"}  # b gone, a on another grid
    assert source.history("b") is None and source.history("a") == History(5, 0)
    source.observe(20.0, {"gone": Demand(9)})
    assert set(source.forecasts(20.0)) == {"a"}


def test_a_seeded_history_comes_before_the_observed_windows_and_only_then_is_saved() -> None:
    source = OnlineForecast()
    source.set_models({"m": settings(retention=100)})
    feed(source, "m", [(50.0, 4.0), (60.0, 4.0)])  # window 5 observed before the seed arrived
    assert source.unsaved() == {}  # not read yet: never overwrite it
    source.seed("m", History(10, 1, (1.0, 2.0, 3.0, 9.0, 9.0), (1.0, 2.0, 3.0, 9.0, 9.0)))
    assert source.history("m") == History(10, 1, (1.0, 2.0, 3.0, 9.0, 4.0), (1.0, 2.0, 3.0, 9.0, 4.0))
    assert list(source.unsaved()) == ["m"] and source.unsaved() == {}
    source.seed("other", History(10, 0, (1.0,), (1.0,)))  # unknown: ignored
    assert source.history("other") is None


def test_the_json_form_round_trips_with_gaps_and_refuses_garbage() -> None:
    history = History(60, 7, (1.0, math.nan, 2.5), (2.0, math.nan, 3.0))
    again = history_from_json(history.to_json())
    assert (again.window_s, again.first, again.mean[0], again.peak[2]) == (60, 7, 1.0, 3.0)
    assert math.isnan(again.mean[1])
    with pytest.raises(InvalidInputError, match="not a forecast history"):
        history_from_json('{"windowSeconds": 60}')


def test_prometheus_answers_become_windows_on_the_grid() -> None:
    (query,) = prometheus_queries('m"x', 10, 5, now=105.0)
    assert query.start == 60.0 and query.end == 100.0 and query.step == 10.0  # windows 5 to 9
    assert 'model="m\\"x"' in query.mean and query.mean.startswith("avg_over_time(")
    assert query.peak.startswith("max_over_time(")

    def matrix(points: list[tuple[float, str]]) -> dict[str, object]:
        return {"status": "success", "data": {"resultType": "matrix", "result": [{"values": points}]}}

    answer = (matrix([(70.0, "2"), (90.0, "3")]), matrix([(70.0, "4"), (90.0, "3")]))
    history = history_from_prometheus(10, 5, 105.0, [answer])
    assert (history.first, history.end, history.mean[0], history.peak[0], history.peak[2]) == (
        6,
        9,
        2.0,
        4.0,
        3.0,
    )
    assert math.isnan(history.mean[1]) and math.isnan(history.peak[1])  # a gap
    assert len(prometheus_queries("m", 1, 25_000, now=30_000.0)) == 3
    with pytest.raises(InvalidInputError):
        history_from_prometheus(10, 5, 105.0, [({"status": "error"}, {})])


def test_epoch_seconds_start_the_history_at_the_first_window_seen() -> None:
    source = OnlineForecast()
    source.set_models({"m": settings(window=60, retention=3600)})
    now = 1_796_000_000.0  # on a cluster ``now`` is epoch seconds: no gap back to window 0
    feed(source, "m", [(now, 1.0), (now + 60, 2.0), (now + 180, 3.0)])
    history = source.history("m")
    assert history is not None and history.first == int(now // 60) and history.mean == (1.0, 2.0)
    assert source.forecasts(now + 180) == {"m": Forecast(2.0, 2.0)}


def daily_history(window_s: int, days: int) -> History:
    """``days`` days of a daily sine (amplitude 8) on a wandering level (a random walk from 30), on windows
    of ``window_s``: a level an exponential smoothing must track."""
    per_day = 86_400 // window_s
    phases = 2 * np.pi * np.arange(days * per_day) / per_day
    level = 30.0 + np.cumsum(np.random.default_rng(0).normal(0.0, 1.0, len(phases)))
    values = np.maximum(level + 8.0 * np.sin(phases), 0.0)
    return History(window_s, 0, tuple(values.tolist()), tuple(values.tolist()))


def seeded_ets(window: int, days: int) -> OnlineForecast:
    """A source forecasting model ``m`` with ets on ``days`` days of :func:`daily_history`, fitted once."""
    source = OnlineForecast()
    source.set_models({"m": settings("ets", window=window, horizon=window, retention=30 * 86_400)})
    source.seed("m", daily_history(window, days))
    assert run_fits(source) == 1  # no fit yet
    return source


def test_ets_refits_once_per_refit_period_and_filters_the_windows_between() -> None:
    window = 3600  # 24 windows a day: ets refits every 14 days = 336 windows
    assert refit_period(settings("ets", window=window, retention=30 * 86_400)) == 336
    busy, quiet = seeded_ets(window, 14), seeded_ets(window, 14)  # a mature history: one refit period
    fits = []
    for k in range(14 * 24, 14 * 24 + 2 * 336 + 1):  # windows of the next 28 days close one by one
        now = k * window + 1.0
        busy.observe(now, {"m": Demand(90.0 if k < 14 * 24 + 18 else 10.0)})
        fits += [k] * run_fits(busy)
        if k <= 14 * 24 + 18:
            quiet.observe(now, {"m": Demand(10.0)})
            assert run_fits(quiet) == 0
        if k == 14 * 24 + 18:  # no refit since the seed: the fit's filter reads the windows since
            assert not fits and "fitted on 336 windows" in busy.note("m")
            assert busy.forecasts(now)["m"].mean > quiet.forecasts(now)["m"].mean + 20.0
    assert len(fits) == 2 and fits[1] - fits[0] == 336  # once per period, whatever the closed windows


def test_a_young_history_is_refitted_as_it_doubles_and_changed_settings_at_once() -> None:
    source = OnlineForecast()
    source.set_models({"m": settings("ets", window=3600, retention=30 * 86_400)})
    fitted_at = []
    for k in range(100):
        source.observe(k * 3600.0, {"m": Demand(float(k % 24))})
        if run_fits(source):
            fitted_at.append(len(source.history("m").mean))  # type: ignore[union-attr]
    assert fitted_at == [1, 2, 4, 8, 16, 32, 64]
    source.set_models({"m": settings("stl-arima", window=3600, retention=30 * 86_400)})
    assert run_fits(source) == 1 and run_fits(source) == 0


def test_the_refits_of_many_models_spread_over_the_period() -> None:
    # ets with a retention of 12 windows: refitted once per 12 windows, each model at its own phase.
    names = [f"model-{i}" for i in range(60)]
    source = OnlineForecast()
    source.set_models({n: settings("ets", retention=120) for n in names})
    for i, name in enumerate(names):
        source.seed(name, History(10, 0, tuple(float(i + k % 3) for k in range(24)), (9.0,) * 24))
    assert refit_period(settings("ets", retention=120)) == 12
    assert run_fits(source) == 60
    source.observe(241.0, {})  # window 24 opens
    per_window = []
    for k in range(25, 37):  # windows 24 to 35 close: one period
        source.observe(k * 10.0 + 1.0, {})
        per_window.append(run_fits(source))
    assert sum(per_window) == 60 and max(per_window) <= 15  # each once, never all in one window
    assert len(source.forecasts(371.0)) == 60


def test_a_forecaster_with_nothing_to_fit_is_fitted_once_and_reads_the_history_as_it_is() -> None:
    half_day = 43_200  # two windows a day: the seasonal mean matters
    source = OnlineForecast()
    source.set_models({"m": settings("warmserve", window=half_day, horizon=1, retention=3 * half_day)})
    assert refit_period(settings("warmserve")) is None
    fits = 0
    for k in range(20):
        source.observe(half_day * k, {"m": Demand(float(k))})
        fits += run_fits(source)
    assert fits == 1  # at the first window; the history has since moved past that fit's windows
    history = source.history("m")
    assert history is not None and history.mean == (16.0, 17.0, 18.0)
    # phase 1's mean (17) plus the last residual (18 - 16): not the last window repeated (18)
    assert source.forecasts(half_day * 19.0)["m"].mean == pytest.approx(19.0)
