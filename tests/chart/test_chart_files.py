"""The chart against its sources, without a cluster: its CRDs and examples are byte-identical copies of
``crds/`` and ``examples/``, its operator Role grants exactly what ``deploy/operator-role.yaml`` says (the
workers' RBAC is the operator's, one per pool), ``helm lint`` passes, values outside the schema are refused
naming the field, and the dashboard queries only metrics the worker and gateway export."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.chart.helm import CHART, REPO, find, helm, helm_binary, rendered
from warmserve.gateway.metrics import GatewayMetrics
from warmserve.operator.kube.metrics import OperatorMetrics
from warmserve.worker.metrics import WorkerMetrics

__all__ = ["helm_binary"]


@pytest.mark.parametrize("folder", ["crds", "examples"])
def test_the_charts_copies_are_identical_to_the_repositorys(folder: str) -> None:
    copies = sorted((CHART / folder).glob("*.yaml"))
    assert copies, f"charts/warmserve/{folder} is empty"
    if folder == "crds":
        assert [p.name for p in copies] == sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    for copy in copies:
        assert copy.read_bytes() == (REPO / folder / copy.name).read_bytes(), (
            f"cp {folder}/{copy.name} {copy}"
        )


def test_the_roles_grant_what_the_operator_and_the_workers_need(helm_binary: Path, tmp_path: Path) -> None:
    objects = rendered(helm_binary, tmp_path)
    deploy = yaml.safe_load((REPO / "deploy" / "operator-role.yaml").read_text())
    assert find(objects, "Role", "warmserve-operator")["rules"] == deploy["rules"]
    accounts = [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"]
    assert sorted(accounts) == ["warmserve-gateway", "warmserve-operator"]  # each pool's, by the operator
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_the_operator_runs_for_the_release_namespace_as_its_service_account(
    helm_binary: Path, tmp_path: Path
) -> None:
    objects = rendered(helm_binary, tmp_path, "operator.tick=2")
    pod = find(objects, "Deployment", "warmserve-operator")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "warmserve-operator"
    args = pod["containers"][0]["args"]
    assert args[:3] == ["operator", "--namespace", "ns"]
    assert args[args.index("--tick") + 1] == "2"


def test_the_operator_replicas_elect_one_by_the_lease_and_are_probed_on_the_health_port(
    helm_binary: Path, tmp_path: Path
) -> None:
    sets = ("operator.replicas=2", "operator.lease.name=ops", "operator.lease.duration=20")
    objects = rendered(helm_binary, tmp_path, *sets, "operator.healthPort=9000")
    deployment = find(objects, "Deployment", "warmserve-operator")["spec"]
    assert deployment["replicas"] == 2 and "strategy" not in deployment  # rolling: the Lease hands over
    container = deployment["template"]["spec"]["containers"][0]
    args = container["args"]
    options = dict(zip(args[1::2], args[2::2], strict=False))
    assert options["--lease-name"] == "ops" and options["--lease-duration"] == "20"
    assert options["--health-host"] == "$(POD_IP)" and options["--health-port"] == "9000"
    assert container["ports"] == [{"name": "health", "containerPort": 9000}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    leases = [r for r in find(objects, "Role", "warmserve-operator")["rules"] if "leases" in r["resources"]]
    assert leases == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["ops"],
            "verbs": ["get", "update"],
        },
    ]


def test_the_gateway_serves_the_models_and_workers_of_the_values(helm_binary: Path, tmp_path: Path) -> None:
    objects = rendered(
        helm_binary,
        tmp_path,
        "gateway.workers={http://10.0.0.5:8000}",
        "gateway.models[0].name=llama-2-7b-chat",
        "gateway.models[0].concurrency=16",
    )
    container = find(objects, "Deployment", "warmserve-gateway")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--model") + 1] == "llama-2-7b-chat:16"
    assert args[args.index("--worker") + 1] == "http://10.0.0.5:8000"
    assert "--discover-namespace" not in args
    rbac = [o["metadata"]["name"] for o in objects if o["kind"] in ("Role", "RoleBinding")]
    assert "warmserve-gateway" not in rbac  # static workers: the gateway reads no Pods
    assert container["ports"] == [{"name": "http", "containerPort": 8080}]
    assert find(objects, "Service", "warmserve-gateway")["spec"]["ports"][0]["targetPort"] == "http"


def test_the_gateway_finds_the_worker_pods_of_its_namespace_by_default_reading_pods_only(
    helm_binary: Path, tmp_path: Path
) -> None:
    objects = rendered(helm_binary, tmp_path)
    pod = find(objects, "Deployment", "warmserve-gateway")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "warmserve-gateway"
    args, env = pod["containers"][0]["args"], pod["containers"][0]["env"]
    assert args[args.index("--discover-namespace") + 1] == "$(POD_NAMESPACE)"
    assert "--worker" not in args and "--model" not in args  # the ModelDeployments are the models
    namespace = {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    assert namespace in env
    assert find(objects, "Role", "warmserve-gateway")["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["warmserve.io"], "resources": ["modeldeployments"], "verbs": ["get", "list", "watch"]},
    ]
    binding = find(objects, "RoleBinding", "warmserve-gateway")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "warmserve-gateway", "namespace": "ns"}]


def test_helm_lint_passes_with_every_option_on(helm_binary: Path, tmp_path: Path) -> None:
    sets = ["examples.enabled=true", "metrics.serviceMonitor.enabled=true"]
    out = helm(
        helm_binary, tmp_path, "lint", "--strict", str(CHART), *[a for s in sets for a in ("--set", s)]
    )
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("operator.policy=fastest", "policy"),
        ("operator.replicas=0", "replicas"),
        ("operator.lease.duration=0", "duration"),
        ("operator.lease.name=Bad_Name", "name"),
        ("gateway.port=0", "port"),
        ("gateway.workers={10.0.0.5}", "workers"),
    ],
)
def test_values_outside_the_schema_are_refused_naming_the_field(
    helm_binary: Path, tmp_path: Path, value: str, field: str
) -> None:
    done = subprocess.run(
        [str(helm_binary), "template", "t", str(CHART), "--set", value],
        capture_output=True,
        text=True,
        env={"HELM_CACHE_HOME": str(tmp_path), "HELM_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)},
        check=False,
    )
    assert done.returncode != 0
    assert field in done.stderr


def test_the_dashboard_queries_only_exported_metrics() -> None:
    exported = {
        name
        for metrics in (WorkerMetrics(), GatewayMetrics(demand=dict), OperatorMetrics())
        for name in _names(metrics.registry)
    }
    dashboard = json.loads((CHART / "dashboards" / "warmserve.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"warmserve_[a-z_]+", target["expr"])
    }
    assert len(dashboard["panels"]) >= 4
    assert queried <= exported, sorted(queried - exported)


def _names(registry: CollectorRegistry) -> set[str]:
    """The series names a scrape of ``registry`` shows (counters end in ``_total``, histograms in
    ``_bucket``, ``_sum`` and ``_count``), whether or not a sample was recorded yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {m.name + suffix for m in registry.collect() for suffix in suffixes.get(m.type, ("",))}
