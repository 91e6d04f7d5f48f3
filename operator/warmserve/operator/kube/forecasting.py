"""The online forecast source's adapter: it tells the source which models to forecast, restores and keeps
their history, and runs the fits in a worker thread (docs/operator.md, Forecasts).

Every ``period_s`` (:meth:`HistoryKeeper.run`, beside the scheduler loop):

- the served models and their ``spec.forecast`` go to the source (:meth:`OnlineForecast.set_models`);
- a new model's history is restored, where ``spec.forecast.history.source`` says: the ConfigMap
  ``<ModelDeployment>-forecast-history`` (owned by the ModelDeployment, so it goes with it), or Prometheus
  (``query_range`` over the gateways' demand gauges at ``prometheusUrl``). Which ConfigMaps exist is asked
  first, in one list of their metadata (:func:`configmap_names`): only those are read, so 200 new models
  cost one request rather than 200 answered 404;
- the windows closed since are saved to that ConfigMap (for ``source: configMap``; Prometheus keeps its own);
- the fits due run one by one in a worker thread (:func:`asyncio.to_thread`), never in the tick;
- each window closed since is checked against its forecast (:meth:`OnlineForecast.checked`): the forecast
  and actual peaks and their error go to the operator's metrics, and a model no longer served loses them.

Errors never stop the operator: a history that cannot be restored (Prometheus away or refusing, a
malformed document) leaves the model forecasting from what it observes from now on, said in the log and
in a Warning Event on the ModelDeployment (reason ``HistoryUnavailable``); a ConfigMap the API server
cannot give now is asked for again at the next round, and the model's windows are not saved until then
(so a history not yet read is never overwritten); a ConfigMap that cannot be written is written again
at the next closed window; a fit that raises keeps the previous one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kubernetes.client

from warmserve.operator.forecast.history import (
    History,
    history_from_json,
    history_from_prometheus,
    prometheus_queries,
)
from warmserve.operator.kube.metrics import OperatorMetrics
from warmserve.operator.kube.registry import Registry, Served
from warmserve.operator.online_forecast import OnlineForecast
from warmserve.operator.resources import ForecastSettings
from warmserve.protocol.errors import InvalidFieldError, InvalidInputError, UnavailableError
from warmserve.protocol.kube_api import KUBE_ERRORS, brief
from warmserve.protocol.pods import MANAGED_BY, MANAGED_BY_LABEL
from warmserve.protocol.resource_names import API_VERSION, GROUP, VERSION

log = logging.getLogger(__name__)

#: The ConfigMap key holding the history document (:meth:`History.to_json`).
HISTORY_KEY = "history.json"
#: Seconds a Prometheus query or a ConfigMap request may take.
REQUEST_TIMEOUT_S = 10.0
#: The Event reason when a model's history cannot be restored.
UNAVAILABLE_REASON = "HistoryUnavailable"


#: What asks the API server for objects' metadata only.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
#: What :func:`configmap_names` raises.
LIST_ERRORS: tuple[type[Exception], ...] = (*KUBE_ERRORS, InvalidInputError)


def configmap_name(deployment: str) -> str:
    """The ConfigMap holding the history of ModelDeployment ``deployment``."""
    return f"{deployment}-forecast-history"


def read_configmap(core: kubernetes.client.CoreV1Api, namespace: str, deployment: str) -> History | None:
    """The history kept for ``deployment`` (``None``: none kept yet). Raises one of :data:`KUBE_ERRORS`
    or :class:`InvalidInputError` (a malformed document)."""
    try:
        answer: Any = core.read_namespaced_config_map(
            configmap_name(deployment), namespace, _request_timeout=REQUEST_TIMEOUT_S
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    text = (answer.data or {}).get(HISTORY_KEY)
    return history_from_json(text) if text else None


def configmap_names(core: kubernetes.client.CoreV1Api, namespace: str) -> set[str]:
    """The names of the ConfigMaps of ``namespace``, from one list of their metadata (a
    ``PartialObjectMetadataList``: names, not contents). A history is known by its name alone
    (:func:`configmap_name`), labels or not: one seeded by hand or by a migration is read too. Raises one
    of :data:`KUBE_ERRORS`, or :class:`InvalidInputError` for an answer that is not such a list."""
    response: Any = core.list_namespaced_config_map(
        namespace,
        _headers={"Accept": METADATA_ONLY},
        _preload_content=False,
        _request_timeout=REQUEST_TIMEOUT_S,
    )
    try:
        return {str(item["metadata"]["name"]) for item in json.loads(response.data)["items"] or []}
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidInputError(f"the list of ConfigMaps in {namespace}: {exc!r}") from None


def owner_alive(custom: kubernetes.client.CustomObjectsApi, served: Served) -> bool:
    """Whether ``served``'s ModelDeployment still exists, with its uid and not being deleted. A history
    ConfigMap created for an owner already gone would outlive it until the garbage collector finds the
    dangling reference, which can take minutes after the owner's kind was installed. Raises one of
    :data:`KUBE_ERRORS` (a 404 is an answer: gone)."""
    md = served.deployment
    try:
        answer: Any = custom.get_namespaced_custom_object(
            GROUP, VERSION, md.namespace, "modeldeployments", md.name, _request_timeout=REQUEST_TIMEOUT_S
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    metadata = answer.get("metadata", {})
    return bool(metadata.get("uid") == served.uid and metadata.get("deletionTimestamp") is None)


def write_configmap(
    core: kubernetes.client.CoreV1Api,
    custom: kubernetes.client.CustomObjectsApi,
    served: Served,
    history: History,
) -> None:
    """Replace the kept history of ``served`` by ``history``, creating the ConfigMap (owned by the
    ModelDeployment) the first time, and only while that ModelDeployment lives (:func:`owner_alive`):
    the keeper learns of a deletion a round late and must not leave a history behind it. Raises one of
    :data:`KUBE_ERRORS`."""
    md = served.deployment
    name = configmap_name(md.name)
    data = {HISTORY_KEY: history.to_json()}
    try:
        core.patch_namespaced_config_map(
            name, md.namespace, {"data": data}, _request_timeout=REQUEST_TIMEOUT_S
        )
        return
    except kubernetes.client.ApiException as exc:
        if exc.status != 404:
            raise
    owner = {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "name": md.name,
        "uid": served.uid,
    }
    body: Any = {
        "metadata": {
            "name": name,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, f"{GROUP}/model-deployment": md.name},
            "ownerReferences": [owner],
        },
        "data": data,
    }
    if not owner_alive(custom, served):
        log.info("forecast history not kept: ModelDeployment %s is gone", md.name)
        return
    core.create_namespaced_config_map(md.namespace, body, _request_timeout=REQUEST_TIMEOUT_S)


async def prometheus_history(
    session: aiohttp.ClientSession, model: str, settings: ForecastSettings, now: float
) -> History:
    """The last ``retentionSeconds`` of ``model``'s demand before ``now`` from the Prometheus at
    ``settings.prometheus_url``, as closed windows. Raises :class:`UnavailableError` when it cannot be
    asked or refuses, :class:`InvalidInputError` when its answer is not one."""
    assert settings.prometheus_url is not None  # required for source prometheus (resources.py)
    url = settings.prometheus_url.rstrip("/") + "/api/v1/query_range"
    windows = max(1, settings.retention_s // settings.window_s)
    queries = prometheus_queries(model, settings.window_s, windows, now)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    answers = []
    try:
        for query in queries:
            pair = []
            for promql in (query.mean, query.peak):
                async with session.get(url, params=query.params(promql), timeout=timeout) as response:
                    if response.status != 200:
                        text = (await response.text())[:200]
                        raise UnavailableError(f"Prometheus at {url} answered HTTP {response.status}: {text}")
                    pair.append(await response.json(content_type=None))
            answers.append((pair[0], pair[1]))
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise UnavailableError(f"Prometheus at {url} cannot be queried: {type(exc).__name__}: {exc}") from exc
    return history_from_prometheus(settings.window_s, windows, now, answers)


class HistoryKeeper:
    """Keeps ``source`` told of the served models, their history restored and saved, their fits made."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        session: aiohttp.ClientSession,
        registry: Registry,
        source: OnlineForecast,
        metrics: OperatorMetrics,
    ) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.session = session
        self.registry = registry
        self.source = source
        self.metrics = metrics
        self._served: dict[str, Served] = {}
        self._unrestored: set[str] = set()

    async def run(self, period_s: float) -> None:
        """Runs until cancelled (see the module docstring)."""
        while True:
            await self.step()
            await asyncio.sleep(period_s)

    async def step(self) -> None:
        """One round: models, forecasts checked, restored histories, saved windows, due fits."""
        gone = self._served.keys()
        self._served = self.registry.served()
        new = self.source.set_models({m: s.deployment.forecast for m, s in self._served.items()})
        self._check_forecasts(gone - self._served.keys())
        self._unrestored = (self._unrestored | new) & self._served.keys()
        listed = await self._configmap_names(self._unrestored)
        for model in sorted(self._unrestored):
            try:
                self.source.seed(model, await self._restore(model, self._served[model], listed))
            except KUBE_ERRORS as exc:  # its windows are not saved until it is read: nothing overwritten
                log.warning("forecast history of %s not read (again next round): %s", model, brief(exc))
                continue
            self._unrestored.discard(model)
        for model, history in self.source.unsaved().items():
            served = self._served.get(model)
            if served is not None and served.deployment.forecast.history_source == "configMap":
                try:
                    await asyncio.to_thread(write_configmap, self.core, self.custom, served, history)
                except KUBE_ERRORS as exc:
                    log.warning(
                        "forecast history of %s not saved (again at its next window): %s", model, brief(exc)
                    )
        for job in self.source.due():
            try:
                fit = await asyncio.to_thread(job.run)
            except (ValueError, ArithmeticError) as exc:  # statsmodels beyond what the forecasters catch
                log.warning("forecaster %s could not be fitted for %s: %s", job.forecaster, job.model, exc)
                fit = None
            self.source.install(job, fit)
            log.debug("forecast of %s: %s", job.model, self.source.note(job.model))

    def _check_forecasts(self, gone: set[str]) -> None:
        """Each closed window's forecast and actual peak to the metrics (a model gone meanwhile skipped);
        the models in ``gone`` lose theirs."""
        for check in self.source.checked():
            if check.model not in self._served:
                continue
            try:
                self.metrics.record_forecast_error(check.model, check.forecast_peak, check.actual_peak)
            except InvalidFieldError as exc:  # a forecaster's NaN or negative peak: said, not counted
                log.warning("forecast of %s not checked: %s", check.model, exc)
        for model in gone:
            self.metrics.forget_model(model)

    async def _configmap_names(self, models: set[str]) -> dict[str, set[str]]:
        """For each namespace of the ``models`` kept in ConfigMaps, the names of the ConfigMaps there
        (:func:`configmap_names`). A namespace whose list fails is left out: each of its models'
        ConfigMap is then read on its own."""
        namespaces = {
            self._served[m].deployment.namespace
            for m in models
            if self._served[m].deployment.forecast.history_source == "configMap"
        }
        names: dict[str, set[str]] = {}
        for namespace in sorted(namespaces):
            try:
                names[namespace] = await asyncio.to_thread(configmap_names, self.core, namespace)
            except LIST_ERRORS as exc:
                log.warning("ConfigMaps of %s not listed (each history read instead): %s", namespace, exc)
        return names

    async def _restore(self, model: str, served: Served, listed: dict[str, set[str]]) -> History | None:
        """The model's kept history; ``None`` when there is none (for a ConfigMap, when ``listed`` names its
        namespace's ConfigMaps without it), or when Prometheus cannot be asked or the document is malformed
        (said: log, Event). Raises one of :data:`KUBE_ERRORS` when the ConfigMap cannot be read now: the
        caller asks again rather than overwrite a history it has not read."""
        settings = served.deployment.forecast
        md = served.deployment
        try:
            if settings.history_source == "prometheus":
                history: History | None = await prometheus_history(self.session, model, settings, time.time())
            elif md.namespace in listed and configmap_name(md.name) not in listed[md.namespace]:
                history = None  # listed, and not among them: none kept yet
            else:
                history = await asyncio.to_thread(read_configmap, self.core, md.namespace, md.name)
        except (UnavailableError, InvalidInputError) as exc:
            reason = str(exc)
            message = (
                f"forecast history of {model} not restored from {settings.history_source}: {reason}; "
                "forecasting from the demand observed from now on"
            )
            log.warning("%s", message)
            await asyncio.to_thread(self._warn, served, message)
            return None
        windows = 0 if history is None else len(history.mean)
        log.info(
            "forecast history of %s: %d windows restored from %s", model, windows, settings.history_source
        )
        return history

    def _warn(self, served: Served, message: str) -> None:
        """A Warning Event on the ModelDeployment; one that cannot be posted is only logged."""
        md = served.deployment
        stamp = datetime.now(UTC).isoformat()
        event: Any = {
            "metadata": {"generateName": f"{md.name}."},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": "ModelDeployment",
                "name": md.name,
                "namespace": md.namespace,
                "uid": served.uid,
            },
            "reason": UNAVAILABLE_REASON,
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": "warmserve-operator"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(md.namespace, event, _request_timeout=REQUEST_TIMEOUT_S)
        except KUBE_ERRORS as exc:
            log.warning(
                "Event %s on ModelDeployment %s not posted: %s", UNAVAILABLE_REASON, md.name, brief(exc)
            )
