"""``warmserve operator`` forecasts against the real API server: each ModelDeployment's status carries the
forecast the scheduler planned with, its history is kept in a ConfigMap it owns, and an operator killed
with SIGKILL and started again goes on with that history rather than starting a new one. A model whose
Prometheus cannot be reached still forecasts, from what it observes, and a Warning Event says why. Each
closed window's forecast and actual peak show in the operator's ``/metrics``, until the model goes."""

from __future__ import annotations

import re
import signal
from typing import Any

import kubernetes
import pytest

from e2e.harness.cluster import Cluster, free_port
from e2e.harness.waiting import wait_for
from tests.crds.test_crds_api import PLURALS, crds, create, raw
from tests.operator.kube.test_kube_cluster import gateway_pod
from tests.operator.kube.test_operator import WAIT_S, Start, get, log_tail, start_operator
from warmserve.operator.forecast.history import History, history_from_json
from warmserve.operator.kube.forecasting import (
    HISTORY_KEY,
    UNAVAILABLE_REASON,
    configmap_name,
    configmap_names,
    write_configmap,
)
from warmserve.operator.kube.registry import Served
from warmserve.operator.resources import parse_model_deployment
from warmserve.protocol.resource_names import GROUP, VERSION

__all__ = ["crds", "start_operator"]  # fixtures

pytestmark = [pytest.mark.kube, pytest.mark.slow]


def deployment(name: str, served: str, history: dict[str, Any]) -> dict[str, Any]:
    """The example ModelDeployment with one-second windows (so a test sees many) and ``history``."""
    md = raw("modeldeployment-llama2-7b.yaml")
    md["metadata"]["name"] = name
    md["spec"]["model"]["servedName"] = served
    md["spec"]["forecast"] = {
        "forecaster": "last-value",
        "windowSeconds": 1,
        "horizonSeconds": 2,
        "history": {"retentionSeconds": 600, **history},
    }
    return md


def kept(core: kubernetes.client.CoreV1Api, ns: str) -> History | None:
    try:
        cm = core.read_namespaced_config_map(configmap_name("kept"), ns)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return history_from_json(cm.data[HISTORY_KEY])


def test_the_forecast_fills_the_status_and_its_history_survives_a_kill(
    kube_cluster: Cluster, kube_namespace: str, start_operator: Start
) -> None:
    ns = kube_namespace
    operator = start_operator()
    with kube_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespaced_pod(ns, gateway_pod("gw"))
        create(api, ns, raw("workerpool-fake-gpus.yaml"))
        owner = create(api, ns, deployment("kept", "kept-model", {"source": "configMap"}))
        away = {"source": "prometheus", "prometheusUrl": f"http://127.0.0.1:{free_port()}"}
        create(api, ns, deployment("away", "away-model", away))

        def forecast(name: str) -> dict[str, Any]:
            return dict(get(api, ns, "ModelDeployment", name).get("status", {}).get("lastForecast", {}))

        for name in ("kept", "away"):
            last = wait_for(f"status.lastForecast of {name}", lambda n=name: forecast(n), timeout=WAIT_S)
            assert last["peak"] >= last["mean"] >= 0 and last["time"].endswith("Z")

        def three_windows() -> History | None:
            h = kept(core, ns)
            return h if h is not None and len(h.mean) >= 3 else None

        history = wait_for("three windows kept", three_windows, timeout=30)
        cm = core.read_namespaced_config_map(configmap_name("kept"), ns)
        assert [(o.kind, o.uid) for o in cm.metadata.owner_references] == [
            ("ModelDeployment", owner["metadata"]["uid"])
        ]

        def unavailable() -> list[Any]:
            events = core.list_namespaced_event(ns, field_selector="involvedObject.name=away").items
            return [e for e in events if e.reason == UNAVAILABLE_REASON]

        (warning,) = wait_for("a HistoryUnavailable Event on away", unavailable, timeout=10)
        assert warning.type == "Warning" and "prometheus" in warning.message

        def checked(model: str) -> dict[str, float]:
            text = operator.get("/metrics")[1]
            names = "forecast_peak|actual_peak|forecast_peak_error"
            pattern = rf'warmserve_operator_({names})_requests\{{model="{model}"\}} (\S+)'
            return {name: float(value) for name, value in re.findall(pattern, text)}

        gauges = wait_for("the forecast checked against the actual peak", lambda: checked("kept-model"), 30)
        assert gauges["forecast_peak_error"] == abs(gauges["forecast_peak"] - gauges["actual_peak"])
        wait_for("away-model's forecast checked", lambda: checked("away-model"), timeout=30)
        custom = kubernetes.client.CustomObjectsApi(api)
        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURALS["ModelDeployment"], "away")
        wait_for("away-model's forecast gauges gone", lambda: not checked("away-model"), timeout=30)

        # kill -9 and start again: the new operator reads the kept history and appends to it.
        operator.process.kill()
        operator.process.wait()
        before = kept(core, ns)
        assert before is not None
        operator = start_operator()

        def appended() -> History | None:
            h = kept(core, ns)
            return h if h is not None and h.end >= before.end + 3 else None

        after = wait_for("windows appended after the restart", appended, timeout=WAIT_S)
        assert after.first == before.first  # the same history, kept: not a new one from the restart on
        assert after.mean[: len(before.mean)] == before.mean
        assert after.first == history.first
        restored = f"kept-model: {len(before.mean)} windows restored from configMap"
        assert restored in operator.log.read_text()
        assert "not listed" not in operator.log.read_text()  # allowed by deploy/operator-role.yaml

    operator.process.send_signal(signal.SIGTERM)
    assert operator.process.wait(timeout=15) == 0, log_tail(operator.log)


def test_a_history_is_created_only_while_its_model_deployment_lives(
    kube_cluster: Cluster, kube_namespace: str, crds: None
) -> None:
    """The keeper learns of a deletion a round late: a write then must not create a ConfigMap that would
    outlive its owner (found after an uninstall), while a living owner's history is created and patched."""
    ns = kube_namespace
    history = History(window_s=1, first=100, mean=(1.0, 2.0), peak=(2.0, 3.0))
    with kube_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        custom = kubernetes.client.CustomObjectsApi(api)
        held = deployment("kept", "kept-model", {"source": "configMap"})
        held["metadata"]["finalizers"] = ["test.warmserve.io/hold"]
        obj = create(api, ns, held)
        served = Served(parse_model_deployment(obj), obj["metadata"]["uid"])

        write_configmap(core, custom, served, history)
        assert kept(core, ns) == history
        core.delete_namespaced_config_map(configmap_name("kept"), ns)

        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURALS["ModelDeployment"], "kept")
        write_configmap(core, custom, served, history)  # being deleted: held by its finalizer
        assert kept(core, ns) is None

        custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURALS["ModelDeployment"], "kept", {"metadata": {"finalizers": None}}
        )
        wait_for(
            "kept gone",
            lambda: (
                not custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURALS["ModelDeployment"])[
                    "items"
                ]
            ),
            timeout=WAIT_S,
        )
        write_configmap(core, custom, served, history)
        assert kept(core, ns) is None

        again = create(api, ns, deployment("kept", "kept-model", {"source": "configMap"}))
        write_configmap(core, custom, served, history)  # same name, another uid: not the owner
        assert kept(core, ns) is None
        renewed = Served(parse_model_deployment(again), again["metadata"]["uid"])
        write_configmap(core, custom, renewed, history)
        assert kept(core, ns) == history


def test_the_kept_histories_are_told_by_one_list_of_names(
    kube_cluster: Cluster, kube_namespace: str, crds: None
) -> None:
    """The keeper reads only the history ConfigMaps that exist, known from one list of the ConfigMaps'
    names: the operator's own, and one seeded by hand without its labels (a migration's, the end-to-end
    scenario's)."""
    ns = kube_namespace
    history = History(window_s=1, first=100, mean=(1.0,), peak=(2.0,))
    with kube_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        custom = kubernetes.client.CustomObjectsApi(api)
        assert configmap_name("a") not in configmap_names(core, ns)
        obj = create(api, ns, deployment("a", "a-model", {"source": "configMap"}))
        write_configmap(core, custom, Served(parse_model_deployment(obj), obj["metadata"]["uid"]), history)
        seeded = {"metadata": {"name": configmap_name("b")}, "data": {HISTORY_KEY: history.to_json()}}
        core.create_namespaced_config_map(ns, seeded)
        names = configmap_names(core, ns)
        assert {configmap_name("a"), configmap_name("b")} <= names
        assert configmap_name("c") not in names
