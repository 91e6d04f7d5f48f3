"""Hannan-Rissanen estimation of an ARMA(1,1) without constant, vectorised.

The same three steps as statsmodels' ``hannan_rissanen(z, ar_order=1, ma_order=1, demean=False)``, the
same estimate to rounding: a long autoregression by Yule-Walker gives residuals, a least-squares
regression on the lagged series and lagged residuals gives the coefficients, and, when those are
stationary and invertible, one more regression removes their bias. statsmodels runs the last step's
recursion as a Python loop over the windows (~10 ms on a week of 300 s windows, most of a ``stl-arima``
fit); here it is one ``scipy.signal.lfilter`` pass (docs/forecasting.md, "Refit cost").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from warmserve.protocol.errors import InvalidFieldError

if TYPE_CHECKING:  # the trace readers import pandas
    from warmserve.operator.forecast.traces import FloatArray


def _lagged(values: FloatArray, order: int) -> FloatArray:
    """Rows t = order .. n-1, column k-1 holding ``values[t - k]`` (statsmodels' ``lagmat(trim="both")``),
    a strided view rather than a copy."""
    windows = np.lib.stride_tricks.sliding_window_view(values, order)[:-1]
    return np.asarray(windows[:, ::-1], dtype=float)


def _least_squares(design: FloatArray, target: FloatArray) -> FloatArray:
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    return np.asarray(coefficients, dtype=float)


def _yule_walker(values: FloatArray, order: int) -> FloatArray:
    """AR(``order``) coefficients from the biased (``/n``) autocovariances of the demeaned series; the
    least-norm solution when their matrix is singular (an idle model's constant series), as statsmodels'
    ``yule_walker`` falls back to a pseudo-inverse."""
    from scipy.linalg import toeplitz

    x = values - values.mean()
    n = len(x)
    autocovariance = np.array([x[: n - k] @ x[k:] for k in range(order + 1)]) / n
    matrix = toeplitz(autocovariance[:-1])
    try:
        return np.asarray(np.linalg.solve(matrix, autocovariance[1:]), dtype=float)
    except np.linalg.LinAlgError:
        return np.asarray(np.linalg.pinv(matrix) @ autocovariance[1:], dtype=float)


def hannan_rissanen_11(values: FloatArray) -> tuple[float, float]:
    """(AR, MA) coefficients of an ARMA(1,1) fitted to ``values`` (already demeaned; no constant).

    ``InvalidFieldError`` (a ``ValueError``, naming ``values``) when the series is too short for the long
    autoregression, as statsmodels refuses it. A singular regression (a constant series) takes the
    least-norm solution, as statsmodels' pseudo-inverse does."""
    n = len(values)
    long_order = max(math.floor(math.log(n) ** 2) if n > 1 else 0, 2)  # statsmodels' choice of order
    if long_order >= n - 1:
        raise InvalidFieldError("values", f"more than {long_order + 1} windows", n)
    long_ar = _yule_walker(values, long_order)
    residuals = values[long_order:] - _lagged(values, long_order) @ long_ar
    design = np.column_stack([values[long_order : n - 1], residuals[:-1]])
    target = values[long_order + 1 :]
    ar, ma = _least_squares(design, target)
    if not (abs(ar) < 1 and abs(ma) < 1):
        return float(ar), float(ma)
    return _unbias(values, float(ar), float(ma))


def _unbias(values: FloatArray, ar: float, ma: float) -> tuple[float, float]:
    """Hannan-Rissanen's third step: the residuals z_t = x_t - ar x_t-1 - ma z_t-1 (z_0 = 0), filtered
    through the AR and MA parts, regressed on their lags give the corrections."""
    from scipy.signal import lfilter

    z = np.zeros(len(values))
    z[1:] = lfilter([1.0, -ar], [1.0, ma], values[1:], zi=[-ar * values[0]])[0]
    v = lfilter([1.0], [1.0, -ar], z)
    w = lfilter([1.0, -ma], [1.0], z)
    d_ar, d_ma = _least_squares(np.column_stack([v[:-1], w[:-1]]), z[1:])
    return ar + float(d_ar), ma + float(d_ma)
