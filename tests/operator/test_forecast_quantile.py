"""The peak's loss and calibration on hand-computable inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warmserve.operator.forecast.quantile import calibrated_loss, calibration_factor, pinball


def test_pinball_charges_an_under_forecast_nine_times_an_over_forecast() -> None:
    actual = np.array([10.0, 10.0, np.nan])
    assert pinball(actual, np.array([8.0, 12.0, 0.0])) == pytest.approx((0.9 * 2 + 0.1 * 2) / 2)
    assert pinball(np.array([10.0]), np.array([8.0])) == pytest.approx(
        9 * pinball(np.array([10.0]), np.array([12.0]))
    )
    assert math.isnan(pinball(np.array([np.nan]), np.array([1.0])))


def test_the_calibration_factor_makes_the_forecast_cover_the_quantile() -> None:
    rng = np.random.default_rng(0)
    forecast = rng.uniform(1, 10, 1000)
    actual = forecast * rng.uniform(0.5, 2.0, 1000)
    factor = calibration_factor(actual, forecast)
    assert np.mean(actual <= factor * forecast) == pytest.approx(0.9, abs=0.005)
    # A zero forecast cannot be scaled: nothing to learn, the factor is 1.
    assert calibration_factor(np.array([5.0, np.nan]), np.array([0.0, 3.0])) == 1.0


def test_calibrated_loss_is_the_pinball_of_the_scaled_forecast() -> None:
    forecast = np.array([1.0, 2.0, 4.0, 8.0])
    actual = 2 * forecast  # a forecast off by a constant factor is a perfect bound once calibrated
    assert calibrated_loss(actual, forecast) == pytest.approx(0.0, abs=1e-12)
    assert calibrated_loss(actual, forecast) < pinball(actual, forecast)
