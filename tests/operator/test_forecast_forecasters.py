"""Forecasters: known answers on synthetic series, fallbacks on little or gappy history, invariants."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from warmserve.operator.forecast.arma import hannan_rissanen_11
from warmserve.operator.forecast.forecasters import (
    BASELINES,
    FORECASTERS,
    Auto,
    AutoFit,
    Ets,
    Forecast,
    LoadFit,
    StlArima,
    WarmServeForecaster,
    fit_load,
    forecast,
    last_value,
    make_forecaster,
)
from warmserve.protocol.errors import InvalidFieldError

PERIOD = 24


def daily(days: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    t = np.arange(days * PERIOD)
    rng = np.random.default_rng(seed)
    return 100 + 50 * np.sin(2 * np.pi * t / PERIOD) + rng.normal(0, noise, len(t))


def test_warmserve_forecast_is_the_seasonal_mean_plus_the_weighted_residuals() -> None:
    # Two days at phase values 10 and 20 (period 2), then a day at 30/40: residuals against the seasonal mean
    # are +15 at every step of day 3, so the correction is +15 and the next phase-0 window is mean(10,30)+15.
    history = np.array([10.0, 20.0, 30.0, 40.0], dtype=float)
    f = WarmServeForecaster(period=2)
    # Seasonal means for the next windows: phase 0 → (10+30)/2 = 20, phase 1 → (20+40)/2 = 30.
    # Residuals of the last windows: window 3 (phase 1): 40 − 20 = 20 (weight 1/2); window 2: 30 − 10 = 20.
    assert f.predict(None, history, 2).tolist() == pytest.approx([40.0, 50.0])


def test_warmserve_weights_recent_residuals_by_powers_of_two() -> None:
    history = np.array([0.0, 0.0, 0.0, 0.0, 4.0, 0.0])  # period 1: seasonal mean = mean of the past
    f = WarmServeForecaster(period=1)
    # Residuals (newest first): window 5: 0 − 0.8 = −0.8; window 4: 4 − 0 = 4; windows 1..3: 0.
    expected_correction = (0.5 * -0.8 + 0.25 * 4.0) / (0.5 + 0.25 + 0.125 + 0.0625 + 0.03125)
    assert f.predict(None, history, 1)[0] == pytest.approx(4 / 6 + expected_correction)


@pytest.mark.parametrize("name", ["warmserve", "ets", "stl-arima", "seasonal-naive-1d", "auto"])
def test_seasonal_forecasters_track_a_daily_pattern(name: str) -> None:
    series = daily(8, noise=2.0)
    forecaster = make_forecaster(name, PERIOD)
    fitted = forecaster.fit(series[: 6 * PERIOD])
    predicted = forecaster.one_step(fitted, series, 6 * PERIOD)
    error = np.mean(np.abs(predicted - series[6 * PERIOD :]))
    assert error < 4.0
    assert np.mean(np.abs(series[6 * PERIOD :] - series[6 * PERIOD - 1 : -1])) > 7.0  # last value's error


@pytest.mark.parametrize("name", list(FORECASTERS))
def test_one_step_matches_predict_one_window_at_a_time(name: str) -> None:
    series = daily(4, noise=3.0, seed=1)
    forecaster = make_forecaster(name, PERIOD)
    fitted = forecaster.fit(series[: 3 * PERIOD])
    batch = forecaster.one_step(fitted, series, 3 * PERIOD)
    single = [forecaster.predict(fitted, series[:i], 1)[0] for i in range(3 * PERIOD, 4 * PERIOD)]
    assert batch == pytest.approx(single, rel=1e-6, abs=1e-6)


@given(
    history=arrays(np.float64, st.integers(0, 80), elements=st.one_of(st.just(np.nan), st.floats(-50, 500))),
    period=st.integers(1, 12),
    start=st.integers(0, 80),
)
@settings(max_examples=200, deadline=None)
def test_one_pass_one_step_matches_predict_on_gappy_series(
    history: np.ndarray, period: int, start: int
) -> None:
    """The one-pass rolling forecasts (linear in the windows) are the per-window ones, gaps, negative
    values and a start at the end of the history included."""
    start = min(start, len(history))
    for forecaster in (WarmServeForecaster(period), make_forecaster("last-value", period)):
        single = [forecaster.predict(None, history[:i], 1)[0] for i in range(start, len(history))]
        batch = forecaster.one_step(None, history, start).tolist()
        assert batch == pytest.approx(single, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", list(FORECASTERS))
@pytest.mark.parametrize(
    "history",
    [np.array([]), np.array([np.nan, np.nan]), np.array([5.0]), np.array([0.0] * 30), daily(1)[:-3]],
    ids=["empty", "all-gaps", "one", "zeros", "under-a-day"],
)
def test_little_history_falls_back_without_crashing(name: str, history: np.ndarray) -> None:
    forecaster = make_forecaster(name, PERIOD)
    predicted = forecaster.predict(forecaster.fit(history), history, 3)
    assert np.isfinite(predicted).all() and (predicted >= 0).all()
    if len(history) <= PERIOD and name not in ("ets",):
        assert predicted.tolist() == pytest.approx([last_value(history)] * 3)


def test_a_new_model_is_forecast_at_zero_and_a_gap_at_the_last_observation() -> None:
    for name in FORECASTERS:
        forecaster = make_forecaster(name, PERIOD)
        assert forecaster.predict(forecaster.fit(np.array([])), np.array([]), 1).tolist() == [0.0]
    gappy = np.array([3.0, 7.0, np.nan, np.nan])
    assert last_value(gappy) == 7.0
    assert make_forecaster("last-value", PERIOD).predict(None, gappy, 1).tolist() == [7.0]


@settings(max_examples=25, deadline=None)
@given(
    history=arrays(
        np.float64,
        st.integers(0, 3 * PERIOD),
        elements=st.one_of(st.floats(0, 1e6), st.just(np.nan)),
    ),
    name=st.sampled_from([n for n in FORECASTERS if n not in ("auto", "stl-arima", "ets")]),
    horizon=st.integers(1, 2 * PERIOD),
)
def test_forecasts_are_never_negative_or_nan(history: np.ndarray, name: str, horizon: int) -> None:
    forecaster = make_forecaster(name, PERIOD)
    predicted = forecaster.predict(forecaster.fit(history), history, horizon)
    assert len(predicted) == horizon and np.isfinite(predicted).all() and (predicted >= 0).all()


@settings(max_examples=5, deadline=None)
@given(
    history=arrays(np.float64, st.integers(2 * PERIOD, 3 * PERIOD), elements=st.floats(0, 1e4)),
    gaps=st.lists(st.integers(0, 2 * PERIOD - 1), max_size=10),
    name=st.sampled_from(["ets", "stl-arima"]),
)
def test_statsmodels_forecasts_on_gappy_series_are_never_negative_or_nan(
    history: np.ndarray, gaps: list[int], name: str
) -> None:
    history = history.copy()
    history[gaps] = np.nan
    forecaster = make_forecaster(name, PERIOD)
    fitted = forecaster.fit(history)
    for predicted in (
        forecaster.predict(fitted, history, PERIOD),
        forecaster.one_step(fitted, history, PERIOD),
    ):
        assert np.isfinite(predicted).all() and (predicted >= 0).all()


def test_a_negative_trend_is_clipped_at_zero() -> None:
    falling = np.linspace(100, 1, 10)
    assert make_forecaster("warmserve", 1).predict(None, falling, 5).min() >= 0.0


def test_auto_picks_a_seasonal_forecaster_on_seasonal_data_and_last_value_on_a_walk() -> None:
    assert Auto(PERIOD).fit(daily(7, noise=1.0)).chosen not in BASELINES
    walk = np.abs(np.cumsum(np.random.default_rng(2).normal(0, 5, 7 * PERIOD))) + 100
    assert Auto(PERIOD).fit(walk).chosen in ("last-value", "ets")


def test_auto_refits_its_choice_and_compares_again_only_every_selection_period() -> None:
    auto, seasonal = Auto(PERIOD), daily(7, noise=1.0)
    kept = auto.refit(AutoFit("last-value", None, 0), seasonal)  # a choice of yesterday: not compared again
    assert (kept.chosen, kept.refits_since_selection) == ("last-value", 1)
    aged = auto.refit(AutoFit("last-value", None, auto.selection_days - 1), seasonal)  # a week old
    assert aged.chosen not in BASELINES and aged.refits_since_selection == 0
    young = auto.refit(auto.fit(seasonal[:PERIOD]), seasonal)  # a day of history had nothing to compare
    assert young.chosen not in BASELINES
    load = fit_load(auto, seasonal, seasonal, LoadFit(auto, kept, kept))
    assert load.mean.chosen == "last-value" and load.mean.refits_since_selection == 2


def test_auto_does_not_pick_a_forecaster_that_would_only_run_its_fallback() -> None:
    assert "seasonal-naive-7d" not in [f.name for f in Auto(PERIOD).candidates(6 * PERIOD)]
    assert "seasonal-naive-7d" in [f.name for f in Auto(PERIOD).candidates(7 * PERIOD)]


def test_online_forecast_gives_mean_and_peak_with_peak_at_least_mean() -> None:
    mean = daily(3)
    peak = mean * 0.5  # a peak series forecast below the mean is raised to it
    fit = fit_load(make_forecaster("warmserve", PERIOD), mean, peak)
    result = forecast(fit, mean, peak, 4)
    assert isinstance(result, Forecast) and len(result.mean) == len(result.peak) == 4
    assert all(p >= m for p, m in zip(result.peak, result.mean, strict=True))
    assert result == forecast(fit, mean, peak, 4)  # pure


def test_bad_names_periods_and_horizons_are_refused() -> None:
    with pytest.raises(InvalidFieldError, match="forecaster"):
        make_forecaster("prophet", PERIOD)
    with pytest.raises(InvalidFieldError, match="period"):
        make_forecaster("warmserve", 0)
    with pytest.raises(InvalidFieldError, match="horizon"):
        make_forecaster("warmserve", PERIOD).predict(None, daily(1), 0)


@pytest.mark.parametrize("days", [1, 4])  # no season (under 2 days), a daily one
def test_ets_filters_and_forecasts_as_statsmodels_does_with_the_same_states(days: int) -> None:
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    series = daily(days + 1, noise=3.0, seed=3)
    ets = Ets(PERIOD)
    fitted = ets.fit(series[: days * PERIOD])
    assert fitted is not None and (fitted.seasonal_periods is not None) == (days >= 2)
    seasonal = fitted.seasonal_periods is not None
    reference = ExponentialSmoothing(
        series,
        seasonal="add" if seasonal else None,
        seasonal_periods=fitted.seasonal_periods,
        initialization_method="known",
        initial_level=fitted.initial_level,
        initial_seasonal=np.array(fitted.initial_seasons) if seasonal else None,
    ).fit(
        smoothing_level=fitted.smoothing_level,
        smoothing_seasonal=fitted.smoothing_seasonal,
        optimized=False,
    )
    ahead = reference.forecast(2 * PERIOD + 5)  # past a whole season
    assert ets.predict(fitted, series, 2 * PERIOD + 5) == pytest.approx(np.maximum(ahead, 0.0))
    start = days * PERIOD
    assert ets.one_step(fitted, series, start) == pytest.approx(reference.fittedvalues[start:])


def test_stl_arima_forecasts_what_a_kalman_filter_with_its_coefficients_forecasts() -> None:
    from statsmodels.tsa.arima.model import ARIMA

    rng = np.random.default_rng(4)
    noise = np.zeros(8 * PERIOD)
    for i in range(1, len(noise)):  # AR(1) noise: something for the ARMA to fit
        noise[i] = 0.7 * noise[i - 1] + rng.normal(0.0, 3.0)
    series = daily(8) + noise
    stl = StlArima(PERIOD)
    fitted = stl.fit(series[: 6 * PERIOD])
    assert fitted is not None and abs(fitted.ma) < 1
    adjusted = series - stl._seasonal(fitted, np.arange(len(series)))
    kalman = ARIMA(adjusted, order=(1, 0, 1), trend="c").filter([fitted.level, fitted.ar, fitted.ma, 1.0])
    ahead = np.arange(len(series), len(series) + 5)
    expected = kalman.forecast(5) + stl._seasonal(fitted, ahead)
    assert stl.predict(fitted, series, 5) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", ["arma", "seasonal", "idle"])
def test_hannan_rissanen_estimates_what_statsmodels_estimates(kind: str) -> None:
    from statsmodels.tsa.arima.estimators.hannan_rissanen import hannan_rissanen

    rng = np.random.default_rng(5)
    shocks = rng.normal(0.0, 1.0, 6 * PERIOD)
    series = np.zeros(len(shocks))
    for i in range(1, len(series)):  # ARMA(1,1): 0.6 AR, 0.3 MA
        series[i] = 0.6 * series[i - 1] + shocks[i] + 0.3 * shocks[i - 1]
    series = {"arma": series, "seasonal": daily(6, noise=3.0), "idle": np.zeros(len(series))}[kind]
    series = series - series.mean()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels warns of the idle series' singular matrices
        reference, _ = hannan_rissanen(series, ar_order=1, ma_order=1, demean=False)
    expected = (reference.ar_params[0], reference.ma_params[0])
    assert hannan_rissanen_11(series) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ets_level_fit_is_as_good_as_statsmodels_estimated_simple_smoothing(seed: int) -> None:
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    rng = np.random.default_rng(seed)
    series = 50 + np.cumsum(rng.normal(0.0, 1.0, 3 * PERIOD)) + rng.normal(0.0, 4.0, 3 * PERIOD)
    fitted = Ets(PERIOD).fit(series)
    assert fitted is not None and fitted.seasonal_periods is None  # a walk plus noise: no season
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ExponentialSmoothing(series, initialization_method="estimated").fit()
    ours = ExponentialSmoothing(series, initialization_method="known", initial_level=fitted.initial_level)
    ours_fit = ours.fit(smoothing_level=fitted.smoothing_level, optimized=False)
    assert ours_fit.sse <= reference.sse * (1 + 1e-6)
    assert fitted.smoothing_level == pytest.approx(reference.params["smoothing_level"], abs=0.02)


def test_auto_keeps_the_fit_its_comparison_made_rather_than_fitting_its_choice_again() -> None:
    series = daily(7, noise=2.0, seed=6)
    auto = Auto(PERIOD)
    fitted = auto.fit(series)
    split = len(series) - auto.evaluation_days * PERIOD
    chosen = make_forecaster(fitted.chosen, PERIOD)
    assert fitted.chosen in ("ets", "stl-arima")
    compared = chosen.predict(chosen.fit(series[:split]), series, PERIOD)
    assert auto.predict(fitted, series, PERIOD) == pytest.approx(compared, rel=1e-12)
    assert not np.allclose(chosen.predict(chosen.fit(series), series, PERIOD), compared, rtol=1e-9)


@pytest.mark.parametrize(("period", "seed"), [(PERIOD, 0), (PERIOD, 1), (25, 2)])  # an even and an odd day
def test_ets_seasonal_fit_starts_where_statsmodels_does_and_fits_as_well(period: int, seed: int) -> None:
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    t = np.arange(5 * period)
    rng = np.random.default_rng(seed)
    series = 100 + 40 * np.sin(2 * np.pi * t / period) + np.cumsum(rng.normal(0.0, 2.0, len(t)))
    fitted = Ets(period).fit(series)
    assert fitted is not None and fitted.seasonal_periods == period
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ExponentialSmoothing(
            series, seasonal="add", seasonal_periods=period, initialization_method="heuristic"
        ).fit()
    assert fitted.initial_level == pytest.approx(reference.params["initial_level"], rel=1e-9)
    assert fitted.initial_seasons == pytest.approx(reference.params["initial_seasons"], rel=1e-9, abs=1e-9)
    assert fitted.smoothing_seasonal is not None
    assert fitted.smoothing_seasonal <= 1 - fitted.smoothing_level
    ours = ExponentialSmoothing(
        series,
        seasonal="add",
        seasonal_periods=period,
        initialization_method="known",
        initial_level=fitted.initial_level,
        initial_seasonal=np.array(fitted.initial_seasons),
    ).fit(
        smoothing_level=fitted.smoothing_level, smoothing_seasonal=fitted.smoothing_seasonal, optimized=False
    )
    assert ours.sse <= reference.sse * (1 + 1e-3)


def test_ets_fits_the_same_weights_at_any_scale_of_load() -> None:
    series = daily(5, noise=3.0, seed=7) + np.cumsum(np.random.default_rng(7).normal(0.0, 2.0, 5 * PERIOD))
    fits = [Ets(PERIOD).fit(series * scale) for scale in (1e-9, 1.0, 1e9)]
    weights = [(f.smoothing_level, f.smoothing_seasonal) for f in fits if f and f.seasonal_periods]
    assert len(weights) == 3  # the daily season at every scale, its weights found alike
    assert weights[0] == pytest.approx(weights[1], abs=1e-4)
    assert weights[2] == pytest.approx(weights[1], abs=1e-4)


@pytest.mark.parametrize("name", ["ets", "stl-arima"])
def test_an_infinite_window_is_not_fitted_and_the_fallback_forecasts(name: str) -> None:
    series = daily(3, noise=1.0)
    series[PERIOD] = np.inf
    forecaster = make_forecaster(name, PERIOD)
    assert forecaster.fit(series) is None
    assert np.isfinite(forecaster.predict(None, series, 3)).all()
