"""The operator's forecast source: each model's demand, observed every tick, becomes mean and peak concurrency
per window, and the forecaster its ``ModelDeployment`` names predicts the horizon from them
(docs/operator.md, Forecasts).

- :meth:`OnlineForecast.observe` adds each tick's ``Demand.total`` (in flight + queued) of every model to the
  window holding ``now`` (``spec.forecast.windowSeconds``, on a grid since the epoch); a tick in a later
  window closes the open one: its mean and peak of the samples join the history (windows without a tick
  are gaps), bounded by ``spec.forecast.history.retentionSeconds``.
- Fitting is the expensive step (statsmodels), so it never runs in the scheduler's tick, and it runs at
  the forecaster's own cadence: a model's :class:`FitJob` is :meth:`~OnlineForecast.due` when it has no fit
  (new, its settings changed, its history seeded), while its history is young (each time it has doubled
  since the fit, until it spans a refit period), and then once per refit period (``refit_days``, at most
  the retention), at a phase of the period set by the model's name so the models' refits spread over the
  period's windows. A forecaster with nothing to fit (``refit_days`` ``None``) is fitted once: it
  forecasts from the history as it is. The adapter runs the jobs in a worker thread and hands them back
  (:meth:`~OnlineForecast.install`). Between refits :meth:`~OnlineForecast.forecasts` runs the last fit's
  filter over the windows added since (cheap, and cached until a window closes or the horizon reaches a
  new window); docs/forecasting.md, "Refit cost".
- A model's forecast over ``[now, now + horizonSeconds]`` is the largest mean and peak of the windows it
  touches. Until a first fit (history short, or its fit still running) the forecast repeats the last closed
  window, or the open window so far when none is closed: what the model does now, it is expected to go on
  doing; :meth:`~OnlineForecast.note` says so. ``forecaster: none``: no forecast for the model.
- Models come and go with :meth:`~OnlineForecast.set_models` (served name → settings). A model's history
  restored at start (a ConfigMap, Prometheus) arrives through :meth:`~OnlineForecast.seed`; until it has
  arrived, the model's windows are not offered for saving (:meth:`~OnlineForecast.unsaved`), so a restarted
  operator never overwrites a history it has not read yet.
- Each forecast is checked against what came: a window remembers the forecast peak of the last tick
  before it started whose horizon reached it (or, when none did, of the first tick within it); when the
  window closes, :meth:`~OnlineForecast.checked` reports that peak beside the peak seen
  (:class:`ForecastCheck`), for the adapter's metrics.

Pure: no I/O; the adapter (``warmserve.operator.kube.forecasting``) reads and writes the history.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from warmserve.operator.forecast.concurrency import SECONDS_PER_DAY, LoadSeries
from warmserve.operator.forecast.forecasters import LoadFit, fit_load, forecast, make_forecaster
from warmserve.operator.forecast.history import History
from warmserve.operator.planning.snapshot import Demand, Forecast
from warmserve.operator.resources import ForecastSettings


@dataclass(frozen=True, slots=True)
class FitJob:
    """One model's fit to run away from the tick: the forecaster's name, the history it is fitted on and
    the model's previous fit by that forecaster (``None``: none), which a refit may build on."""

    model: str
    forecaster: str
    history: History
    previous: LoadFit | None = None

    def run(self) -> LoadFit:
        """The expensive step (:func:`fit_load`); safe in a worker thread (it reads only this job)."""
        load = self.history.load(self.model)
        forecaster = make_forecaster(self.forecaster, load.windows_per_day)
        return fit_load(forecaster, load.mean, load.peak, self.previous)


@dataclass(frozen=True, slots=True)
class ForecastCheck:
    """A closed window of ``model``: the peak concurrency forecast for it and the peak seen in it."""

    model: str
    forecast_peak: float
    actual_peak: float


@dataclass
class _Window:
    index: int
    total: float = 0.0
    peak: float = 0.0
    samples: int = 0

    def add(self, value: float) -> None:
        self.total += value
        self.peak = max(self.peak, value)
        self.samples += 1


@dataclass
class _Model:
    settings: ForecastSettings
    history: History
    open: _Window | None = None
    seeded: bool = False
    saved_end: int = 0  # the history's end when it was last offered for saving
    fit: tuple[FitJob, LoadFit] | None = None
    running: FitJob | None = None
    cache: tuple[tuple[int, int], Forecast] | None = field(default=None, repr=False)
    promised: dict[int, float] = field(default_factory=dict)  # window index -> forecast peak for it


class OnlineForecast:
    """The :class:`~warmserve.operator.ports.ForecastSource` of a live cluster (see the module docstring)."""

    def __init__(self) -> None:
        self._models: dict[str, _Model] = {}
        self._checks: list[ForecastCheck] = []

    # --- models and their history -----------------------------------------------------------------

    def set_models(self, settings: Mapping[str, ForecastSettings]) -> set[str]:
        """The models to forecast now, by served name; returns those that are new (their history is to be
        seeded). A model whose window changed starts afresh (its history is on another grid); one whose
        forecaster or retention changed keeps its history and is fitted again at the next round (:meth:`due`).
        Models absent are forgotten."""
        for name in self._models.keys() - settings.keys():
            del self._models[name]
        new = set()
        for name, wanted in settings.items():
            model = self._models.get(name)
            if model is None or model.settings.window_s != wanted.window_s:
                self._models[name] = _Model(wanted, History(wanted.window_s, 0))
                new.add(name)
            elif model.settings != wanted:
                model.settings = wanted
                model.history = model.history.bounded(_retention(wanted))
                model.fit = model.cache = None
        return new

    def seed(self, model: str, restored: History | None) -> None:
        """The history restored for ``model`` at start (``None``: none could be read): windows before those
        observed since are taken from it, then the model's windows may be saved. Ignored for a model no
        longer known or a history on another grid."""
        state = self._models.get(model)
        if state is None:
            return
        state.seeded = True
        if restored is None or restored.window_s != state.settings.window_s or not restored.mean:
            return
        observed = state.history
        merged = restored.before(observed.first if observed.mean else restored.end)
        for i, (mean, peak) in enumerate(zip(observed.mean, observed.peak, strict=True)):
            if math.isfinite(mean):
                merged = merged.appended(observed.first + i, mean, peak)
        state.history = merged.bounded(_retention(state.settings))
        state.fit = state.cache = None

    def history(self, model: str) -> History | None:
        """The model's closed windows (``None``: not a model it forecasts)."""
        state = self._models.get(model)
        return None if state is None else state.history

    def unsaved(self) -> dict[str, History]:
        """The seeded models whose history gained windows since the last call: to be saved."""
        found = {}
        for name, state in self._models.items():
            if state.seeded and state.history.end > state.saved_end and state.history.mean:
                state.saved_end = state.history.end
                found[name] = state.history
        return found

    # --- the ForecastSource port ------------------------------------------------------------------

    def observe(self, now: float, demand: Mapping[str, Demand]) -> None:
        """Add each model's demand (absent: 0, nothing in flight) to its open window, closing it first when
        ``now`` is in a later one. A sample from an earlier window (the clock stepped back) is dropped."""
        for name, state in self._models.items():
            index = math.floor(now / state.settings.window_s)
            window = state.open
            if window is not None and index < window.index:
                continue
            if window is not None and index > window.index:
                state.history = state.history.appended(
                    window.index, window.total / window.samples, window.peak
                ).bounded(_retention(state.settings))
                self._check(name, state, window)
                window = None
            if window is None:
                window = state.open = _Window(index)
            d = demand.get(name)
            window.add(d.total if d is not None else 0.0)

    def forecasts(self, now: float) -> Mapping[str, Forecast]:
        found = {}
        for name, state in self._models.items():
            if state.settings.enabled:
                predicted = self._forecast(name, state, now)
                if predicted is not None:
                    found[name] = predicted
                    _promise(state, now, predicted.peak)
        return found

    def checked(self) -> list[ForecastCheck]:
        """The windows closed since the last call that had a forecast, oldest first (then forgotten)."""
        checks, self._checks = self._checks, []
        return checks

    def _check(self, name: str, state: _Model, closed: _Window) -> None:
        """Report the forecast peak of the window just closed beside its actual peak, and drop the
        forecasts of windows before it (they closed without a tick: gaps)."""
        forecast_peak = state.promised.pop(closed.index, None)
        state.promised = {k: v for k, v in state.promised.items() if k > closed.index}
        if forecast_peak is not None:
            self._checks.append(ForecastCheck(name, forecast_peak, closed.peak))

    # --- fits, run by the adapter in a worker thread ------------------------------------------------

    def due(self) -> list[FitJob]:
        """A job for each forecasting model with none running whose fit is missing or due (see the module
        docstring)."""
        jobs = []
        for name, state in self._models.items():
            if state.settings.enabled and state.running is None and _refit_due(name, state):
                previous = state.fit[1] if state.fit is not None else None
                state.running = FitJob(name, state.settings.forecaster, state.history, previous)
                jobs.append(state.running)
        return jobs

    def install(self, job: FitJob, fit: LoadFit | None) -> None:
        """The result of ``job`` (``None``: it failed; the model keeps its previous fit and is due again).
        Dropped when the model was forgotten or changed meanwhile."""
        state = self._models.get(job.model)
        if state is None or state.running is not job:
            return
        state.running = None
        if fit is not None and job.forecaster == state.settings.forecaster:
            state.fit, state.cache = (job, fit), None

    def note(self, model: str) -> str:
        """What the model's forecast rests on, in words (for logs and status)."""
        state = self._models.get(model)
        if state is None:
            return "not a served model"
        settings = state.settings
        if not settings.enabled:
            return "forecaster none: served reactively only"
        windows = int(np.count_nonzero(np.isfinite(state.history.mean)))
        if state.fit is None:
            return f"{windows} windows of history, no fit yet: the forecast repeats the last window"
        day = state.history.load(model).windows_per_day
        short = f" (less than a day, {day}: the forecaster falls back)" if windows < day else ""
        return f"{settings.forecaster} fitted on {len(state.fit[0].history.mean)} windows{short}"

    def _forecast(self, name: str, state: _Model, now: float) -> Forecast | None:
        """The fit's forecast (cached until a window closes, the horizon reaches a new window or the fit
        changes), or the fallback (cheap, and changing within the open window)."""
        history = state.history
        if state.fit is None or not history.mean:
            return _fallback(state, history)
        last = math.floor((now + state.settings.horizon_s) / state.settings.window_s)
        key = (history.end, last)
        if state.cache is not None and state.cache[0] == key:
            return state.cache[1]
        job, fit = state.fit
        fresh = fit.forecaster.refit_days is None  # nothing fitted: the history as it is now
        series = history.load(name) if fresh else _since_fit(name, job.history, history)
        if series is None:
            return _fallback(state, history)
        f = forecast(fit, series.mean, series.peak, max(1, last - history.end + 1))
        mean = max(f.mean)
        predicted = Forecast(mean, max(max(f.peak), mean))
        state.cache = (key, predicted)
        return predicted


def refit_period(settings: ForecastSettings) -> int | None:
    """Windows between a model's refits once its history is mature: the forecaster's ``refit_days``, at
    most the retention (a fit whose last window was trimmed from the history can no longer be filtered
    forward); ``None`` for a forecaster with nothing to fit (one fit, which forecasts from the history)."""
    days = make_forecaster(settings.forecaster, 1).refit_days
    if days is None:
        return None
    return max(1, min(_retention(settings), round(days * SECONDS_PER_DAY / settings.window_s)))


def _refit_due(name: str, state: _Model) -> bool:
    """Whether the model's fit is missing or due: its history has doubled since a fit on less than a refit
    period of windows, or its windows have crossed the model's refit phase (its name's CRC-32 modulo the
    period: the same in every process, and spread evenly over the models) since the fit."""
    history = state.history
    if not history.mean:
        return False
    if state.fit is None:
        return True
    period = refit_period(state.settings)
    if period is None:
        return False
    fitted = state.fit[0].history
    grown = history.end - fitted.end
    if len(fitted.mean) < period and grown >= max(1, len(fitted.mean)):
        return True
    phase = zlib.crc32(name.encode()) % period
    return (history.end + phase) // period > (fitted.end + phase) // period


def _since_fit(name: str, fitted: History, now: History) -> LoadSeries | None:
    """The series :func:`forecast` needs: starting at the fit's first window (the history may have been
    trimmed since) and running to the newest closed one; ``None`` when the history no longer reaches back
    to the fit's last window."""
    if now.first > fitted.end:
        return None
    newer = now.bounded(now.end - fitted.end) if now.end > fitted.end else History(now.window_s, now.end)
    series = fitted.load(name)
    return LoadSeries(
        name,
        series.start_sec,
        series.window_sec,
        np.concatenate([series.mean, np.array(newer.mean, dtype=float)]),
        np.concatenate([series.peak, np.array(newer.peak, dtype=float)]),
    )


def _promise(state: _Model, now: float, peak: float) -> None:
    """Remember ``peak`` as the forecast of the window under way, unless it has one (the forecast it
    started with), and of the next window when the horizon from ``now`` reaches it (the newest forecast
    before it starts wins). Constant work per tick whatever the horizon."""
    window_s = state.settings.window_s
    current = math.floor(now / window_s)
    state.promised.setdefault(current, peak)
    if now + state.settings.horizon_s >= (current + 1) * window_s:
        state.promised[current + 1] = peak


def _fallback(state: _Model, history: History) -> Forecast | None:
    """The last closed window's mean and peak, else the open window's so far, else none."""
    finite = np.flatnonzero(np.isfinite(history.mean))
    if len(finite):
        k = int(finite[-1])
        return Forecast(history.mean[k], max(history.peak[k], history.mean[k]))
    window = state.open
    if window is None or not window.samples:
        return None
    return Forecast(window.total / window.samples, window.peak)


def _retention(settings: ForecastSettings) -> int:
    """Windows of history kept (at least one)."""
    return max(1, settings.retention_s // settings.window_s)
