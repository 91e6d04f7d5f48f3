"""Backtest metrics on hand-computable inputs, and the rolling evaluation's no-peeking guarantee."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warmserve.operator.forecast.backtest import backtest, exceeded, mape, mase, rolling_one_step
from warmserve.operator.forecast.concurrency import LoadSeries
from warmserve.operator.forecast.forecasters import FORECASTERS, make_forecaster
from warmserve.operator.forecast.outlook import outlooks
from warmserve.protocol.errors import InvalidFieldError


def test_mape_skips_windows_without_load() -> None:
    actual = np.array([100.0, 0.0, 50.0, np.nan])
    predicted = np.array([110.0, 5.0, 40.0, 1.0])
    assert mape(actual, predicted) == pytest.approx((10 + 20) / 2)
    assert math.isnan(mape(np.array([0.0]), np.array([1.0])))


def test_exceeded_counts_the_windows_whose_actual_was_above_the_forecast() -> None:
    actual = np.array([10.0, 5.0, 7.0, np.nan])
    predicted = np.array([9.0, 5.0, 8.0, 0.0])  # above, equal (not an under-forecast), below, no data
    assert exceeded(actual, predicted) == pytest.approx(100 / 3)
    assert math.isnan(exceeded(np.array([np.nan]), np.array([1.0])))


def test_mase_scales_by_the_training_naive_error() -> None:
    training = np.array([1.0, 3.0, 2.0, np.nan, 4.0])  # one-step changes 2, 1 (the NaN ones are skipped)
    actual = np.array([5.0, 6.0])
    predicted = np.array([4.0, 8.0])
    assert mase(actual, predicted, training) == pytest.approx(1.5 / 1.5)
    assert math.isnan(mase(actual, predicted, np.array([2.0, 2.0])))


def test_rolling_forecasts_never_see_the_window_they_forecast() -> None:
    series = np.arange(30, dtype=float)
    changed = series.copy()
    changed[20:] += 1000.0
    forecaster = make_forecaster("last-value", 5)
    before = rolling_one_step(forecaster, series, 10)
    after = rolling_one_step(forecaster, changed, 10)
    assert before.tolist() == series[9:-1].tolist()  # last value: the previous window
    assert after[:11].tolist() == before[:11].tolist()  # windows up to 20 are unaffected by 20 onwards


def test_auto_does_not_peek_either() -> None:
    rng = np.random.default_rng(3)
    series = 100 + 10 * np.sin(np.arange(60) * 2 * np.pi / 6) + rng.normal(0, 1, 60)
    changed = series.copy()
    changed[45:] = 0.0
    auto = make_forecaster("auto", 6)
    assert (
        rolling_one_step(auto, series, 30)[:16].tolist() == rolling_one_step(auto, changed, 30)[:16].tolist()
    )


def test_backtest_scores_every_model_and_forecaster() -> None:
    t = np.arange(96)
    mean = 50 + 2.0 * np.abs(t % 24 - 12)  # daily zigzag: every one-step change is exactly 2
    load = LoadSeries("m", 0.0, 3600.0, mean, mean * 1.5)
    flat = LoadSeries("flat", 0.0, 3600.0, np.full(96, 7.0), np.full(96, 9.0))
    result = backtest([load, flat], ["seasonal-naive-1d", "last-value"], train_fraction=0.5)
    assert result.train_windows == {"m": 48, "flat": 48}
    exact = result.models["m"]["seasonal-naive-1d"]
    assert exact.mean_mape == pytest.approx(0.0, abs=1e-9) and exact.peak_mase == pytest.approx(0.0, abs=1e-9)
    assert result.models["m"]["last-value"].mean_mase == pytest.approx(1.0)  # the naive error itself
    # Calibration: the exact forecast is never below the peak; the last value is on every rising window.
    assert exact.peak_exceeded == 0.0
    assert result.models["m"]["last-value"].peak_exceeded == pytest.approx(50.0)
    assert result.models["flat"]["last-value"].mean_mape == 0.0
    assert math.isnan(result.models["flat"]["last-value"].mean_mase)  # a constant training part has no scale
    # Overall is the mean over models of the finite figures.
    assert result.overall["last-value"].mean_mase == pytest.approx(1.0)
    assert result.overall["last-value"].mean_mape == pytest.approx(
        result.models["m"]["last-value"].mean_mape / 2
    )


def test_backtest_refuses_splits_without_training_or_test_windows() -> None:
    load = LoadSeries("m", 0.0, 300.0, np.ones(3), np.ones(3))
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(InvalidFieldError, match="train_fraction"):
            backtest([load], ["last-value"], fraction)
    with pytest.raises(InvalidFieldError, match="trace: expected at least one model with windows"):
        backtest([load], ["last-value"], 0.9)
    long = LoadSeries("long", 0.0, 300.0, np.ones(10), np.ones(10))
    result = backtest([load, long], ["last-value"], 0.9)
    assert set(result.models) == {"long"}
    assert result.skipped == {"m": "3 windows: too few for a training, a validation and a test part"}
    with pytest.raises(InvalidFieldError, match="forecaster"):
        backtest([LoadSeries("m", 0.0, 300.0, np.ones(10), np.ones(10))], ["nope"], 0.5)


def noisy_day(days: int, seed: int) -> np.ndarray:
    t = np.arange(days * 24)
    return 100 + 60 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(seed).normal(0, 3, len(t))


def test_auto_and_the_bound_learn_on_validation_only() -> None:
    """Train | validation | test: 8 days before the test span, the last third of them validation. Whatever
    the test span holds, auto's pick and the bound's factor are the same; auto picks the daily forecaster
    on a daily series and scores what that forecaster scores."""
    peak = noisy_day(16, seed=1)
    load = LoadSeries("m", 0.0, 3600.0, peak / 2, peak)
    names = list(FORECASTERS)
    result = backtest([load], names, train_fraction=0.5)
    assert result.train_windows == {"m": 192} and result.validation_windows == {"m": 64}
    assert result.chosen["m"] != "last-value"
    changed = peak.copy()
    changed[192:] = changed[192:][::-1] * 3
    other = backtest([LoadSeries("m", 0.0, 3600.0, changed / 2, changed)], names, train_fraction=0.5)
    assert other.chosen == result.chosen
    for name in names:
        assert other.models["m"][name].peak_factor == result.models["m"][name].peak_factor
    assert result.models["m"]["auto"] == result.models["m"][result.chosen["m"]]
    # The calibrated bound covers the peak in about 90% of the test windows, the point forecast in fewer.
    scores = result.models["m"][result.chosen["m"]]
    assert scores.bound_exceeded < scores.peak_exceeded and scores.bound_exceeded <= 25.0


def test_statsmodels_fits_read_a_bounded_trailing_span() -> None:
    """A fit costs the same however long the history: it reads the last fit_days, and predicting filters
    from that span's start, agreeing with the one-pass rolling forecasts."""
    series = noisy_day(12, seed=2)
    for name in ("ets", "stl-arima"):
        forecaster = make_forecaster(name, 24)
        fitted = forecaster.fit(series[: 10 * 24])
        assert fitted.first == 10 * 24 - 7 * 24
        batch = forecaster.one_step(fitted, series, 10 * 24)
        single = [forecaster.predict(fitted, series[:i], 1)[0] for i in range(10 * 24, 12 * 24)]
        assert batch == pytest.approx(single, rel=1e-6, abs=1e-6)


def test_auto_gives_a_tie_to_the_simplest_forecaster() -> None:
    """A client idle over the whole validation span tells the forecasters nothing apart: auto then uses
    last value, not a seasonal model fitted on the busy days before."""
    peak = noisy_day(16, seed=3)
    peak[128:192] = 0.0  # the validation span
    result = backtest([LoadSeries("idle", 0.0, 3600.0, peak / 2, peak)], list(FORECASTERS), 0.5)
    assert result.chosen == {"idle": "last-value"}


def test_a_model_too_short_to_backtest_borrows_the_daily_shape_of_the_others() -> None:
    """Two models busy at the same hours; a third with two windows of history (too few to backtest): its
    next window is its own level times the shape the others share at that hour, not its last value."""
    hours = np.arange(96)
    shape = np.where(hours % 24 < 12, 1.0, 3.0)  # quiet mornings, busy afternoons
    busy = [LoadSeries(m, 0.0, 3600.0, k * shape, 2 * k * shape) for m, k in (("a", 5.0), ("b", 50.0))]
    new = LoadSeries("new", 13 * 3600.0, 3600.0, np.array([6.0, 6.0]), np.array([9.0, 9.0]))
    loads = [*busy, new]
    (ahead,) = [o for o in outlooks(loads, backtest(loads, ["last-value"], 0.5)) if o.model == "new"]
    # It starts at 13:00 and has 2 windows: its next window is 15:00, an afternoon slot (3 / mean 2 = 1.5).
    assert ahead.forecaster == "pooled-shape" and "daily shape of 2 models" in ahead.why
    assert (ahead.mean, ahead.peak) == pytest.approx((6.0 * 1.5, 9.0 * 1.5))
