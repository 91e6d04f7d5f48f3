"""Parsing ModelDeployment and WorkerPool objects (defaults filled in as the API server fills them) into the
control plane's types, the worker Pod a pool runs, and the errors that name a bad field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.crds.crd_objects import crd, example, examples, schema, with_defaults
from warmserve.cli import build_parser
from warmserve.operator.forecast.forecasters import FORECASTERS
from warmserve.operator.resources import (
    ENGINES,
    NO_FORECAST,
    ModelDeployment,
    WorkerPool,
    parse_model_deployment,
    parse_quantity,
    parse_worker_pool,
    worker_selector,
)
from warmserve.protocol.errors import InvalidFieldError
from warmserve.worker.process import parse_size
from warmserve.worker.timing import GPU_PROFILES, Tier

GIB = 2**30


def pool(name: str = "fake-gpus", **spec: Any) -> WorkerPool:
    obj = example("WorkerPool", "fake-gpus")
    obj["metadata"]["name"] = name
    obj["spec"].update(spec)
    return parse_worker_pool(obj)


def deployment(name: str = "llama2-7b", **spec: Any) -> ModelDeployment:
    obj = example("ModelDeployment", name)
    obj["spec"].update(spec)
    return parse_model_deployment(obj)


def model_obj(**model: Any) -> dict[str, Any]:
    obj = example("ModelDeployment", "llama2-7b")
    obj["spec"]["model"].update(model)
    return obj


def test_every_example_parses() -> None:
    docs = examples()
    assert {doc["kind"] for doc in docs.values()} == {"ModelDeployment", "WorkerPool"}
    pools = [parse_worker_pool(with_defaults(d)) for d in docs.values() if d["kind"] == "WorkerPool"]
    for doc in docs.values():
        if doc["kind"] == "ModelDeployment":
            parse_model_deployment(with_defaults(doc)).model_config(pools)  # fits a pool of the examples


def test_a_deployment_becomes_the_decision_cores_model_config() -> None:
    config = deployment().model_config([pool()])
    spec = config.spec
    assert (spec.name, spec.weights, spec.weight_bytes) == (
        "llama-2-7b-chat",
        "fake://llama2-7b",
        13476831232,
    )
    assert (spec.tensor_parallel, spec.kv_bytes_per_token, spec.max_concurrency) == (1, 524288, 16)
    assert dict(spec.engine_args) == {"shape": "llama2-7b"}
    assert (config.min_instances, config.max_instances, config.priority, config.slo_ttft_s) == (
        1,
        4,
        2.0,
        1.0,
    )
    assert config.load_bandwidth_bytes_per_s == 20 * GIB
    assert config.init_seconds == 0.0


def test_the_deployments_own_settings() -> None:
    md = deployment()
    assert (md.namespace, md.name, md.engine, md.pools, md.spec.context_length) == (
        "default",
        "llama2-7b",
        "fake",
        ("fake-gpus",),
        4096,
    )
    forecast = md.forecast
    assert (forecast.forecaster, forecast.window_s, forecast.horizon_s, forecast.enabled) == (
        "auto",
        60,
        120,
        True,
    )
    assert (forecast.history_source, forecast.retention_s, forecast.prometheus_url) == (
        "configMap",
        604800,
        None,
    )
    assert not deployment("llama3-8b").forecast.enabled


def test_the_served_name_defaults_to_the_resources_name() -> None:
    assert deployment("llama2-13b").spec.name == "llama2-13b"


def test_scale_replicas_set_the_floor_of_serving_instances_else_min_replicas() -> None:
    assert deployment("llama3-8b").model_config([pool()]).min_instances == 1  # replicas: 1, minReplicas: 0
    assert deployment("llama2-13b").model_config([pool()]).min_instances == 0
    assert deployment(replicas=3).model_config([pool()]).min_instances == 3


def test_a_file_uri_becomes_a_path_in_the_model_store() -> None:
    obj = model_obj(uri="file:///models/llama", format="safetensors")
    obj["spec"]["engine"] = "vllm"
    assert parse_model_deployment(obj).spec.weights == "/models/llama"
    obj["spec"]["model"]["uri"] = "/models/llama"
    assert parse_model_deployment(obj).spec.weights == "/models/llama"


def test_the_cold_start_cost_is_the_slowest_fitting_pools() -> None:
    fast = pool(loadBandwidth="40Gi")
    slow = pool("slow", loadBandwidth="1G", engineStartSeconds=5)
    config = deployment(pools=[]).model_config([fast, slow])
    assert config.load_bandwidth_bytes_per_s == 10**9
    assert config.init_seconds == 5.0


@pytest.mark.parametrize(
    ("pool_spec", "deployment_spec"),
    [
        ({"gpusPerPod": 1}, {"model": {**example("ModelDeployment", "llama3-8b")["spec"]["model"]}}),
        ({"poolBytes": "12Gi"}, {}),
        ({"engine": "vllm"}, {}),
        ({}, {"pools": ["other-pool"]}),
    ],
    ids=["tensor-parallel-wider-than-a-pod", "shard-over-the-pool-size", "other-engine", "pool-not-named"],
)
def test_a_model_no_pool_can_hold_is_refused_on_spec_pools(
    pool_spec: dict[str, Any], deployment_spec: dict[str, Any]
) -> None:
    with pytest.raises(InvalidFieldError) as refused:
        deployment(**deployment_spec).model_config([pool(**pool_spec)])
    assert refused.value.field == "spec.pools"
    assert refused.value.got == ["default/fake-gpus"]


def test_a_pool_of_another_namespace_holds_no_model() -> None:
    other = example("WorkerPool", "fake-gpus")
    other["metadata"]["namespace"] = "elsewhere"
    with pytest.raises(InvalidFieldError, match=r"^spec\.pools: "):
        deployment().model_config([parse_worker_pool(other)])


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return out


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("spec.model.tensorParallel", 3, "spec.model.tensorParallel"),
        ("spec.model.tensorParallel", 0, "spec.model.tensorParallel"),
        ("spec.model.weightBytes", "-1Gi", "spec.model.weightBytes"),
        ("spec.model.weightBytes", "1.5", "spec.model.weightBytes"),
        ("spec.model.weightBytes", "13 GiB", "spec.model.weightBytes"),
        ("spec.model.uri", "models/llama", "spec.model.uri"),
        ("spec.model.format", "safetensors", "spec.model.format"),
        ("spec.model.servedName", "two words", "spec.model.servedName"),
        ("spec.minReplicas", 5, "spec.maxReplicas"),
        ("spec.replicas", 9, "spec.replicas"),
        ("spec.maxReplicas", True, "spec.maxReplicas"),
        ("spec.engine", "tpu", "spec.engine"),
        ("spec.priority", float("nan"), "spec.priority"),
        ("spec.slo.ttftSeconds", 0, "spec.slo.ttftSeconds"),
        ("spec.serving.maxConcurrency", 0, "spec.serving.maxConcurrency"),
        ("spec.forecast.forecaster", "prophet", "spec.forecast.forecaster"),
        ("spec.forecast.horizonSeconds", 30, "spec.forecast.horizonSeconds"),
        ("spec.forecast.history.source", "prometheus", "spec.forecast.history.prometheusUrl"),
        ("spec.pools", "fake-gpus", "spec.pools"),
        ("spec.serving", _DELETE, "spec.serving"),
        ("metadata.name", "", "metadata.name"),
    ],
)
def test_a_bad_deployment_field_is_named(path: str, value: Any, field: str) -> None:
    with pytest.raises(InvalidFieldError) as refused:
        parse_model_deployment(_set(example("ModelDeployment", "llama2-7b"), path, value))
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("spec.poolBytes", -1, "spec.poolBytes"),
        ("spec.poolBytes", "0", "spec.poolBytes"),
        ("spec.gpusPerPod", 0, "spec.gpusPerPod"),
        ("spec.pods", -1, "spec.pods"),
        ("spec.engine", "tpu", "spec.engine"),
        ("spec.fakeGpu", "yes", "spec.fakeGpu"),
        ("spec.loadBandwidth", "fast", "spec.loadBandwidth"),
        ("spec.store", "models", "spec.store"),
        ("spec.port", 70000, "spec.port"),
        ("spec.fake.tier", "tape", "spec.fake.tier"),
        ("spec.template.resources", {"limits": {"nvidia.com/gpu": 2}}, "spec.template.resources.limits"),
        ("spec.template.resources", {"requests": {"cpu": "lots"}}, "spec.template.resources.requests.cpu"),
        ("spec.template.nodeSelector", {"zone": 1}, "spec.template.nodeSelector.zone"),
        ("kind", "Pod", "kind"),
        ("metadata.name", "p" * 59, "metadata.name"),
    ],
)
def test_a_bad_pool_field_is_named(path: str, value: Any, field: str) -> None:
    with pytest.raises(InvalidFieldError) as refused:
        parse_worker_pool(_set(example("WorkerPool", "fake-gpus"), path, value))
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("text", "whole", "expected"),
    [
        (80 * GIB, True, 80 * GIB),
        ("80Gi", True, 80 * GIB),
        ("512Mi", True, 512 * 2**20),
        ("1.5Gi", True, 3 * 2**29),
        ("2G", True, 2 * 10**9),
        ("2e9", True, 2 * 10**9),
        ("1.5k", True, 1500),
        ("250m", False, 1),
        ("1.5", False, 2),
    ],
)
def test_quantities(text: object, whole: bool, expected: int) -> None:
    assert parse_quantity(text, "q", whole=whole) == expected


@pytest.mark.parametrize("text", ["-1", "0", "1.5", "250m", "1Zi", "Gi", "", None, True, 2.0])
def test_a_quantity_that_is_not_a_positive_number_of_bytes_is_refused(text: object) -> None:
    with pytest.raises(InvalidFieldError, match=r"^size: expected a positive whole quantity"):
        parse_quantity(text, "size")


def test_the_worker_pod_of_a_fake_gpu_pool() -> None:
    obj = example("WorkerPool", "fake-gpus")
    obj["metadata"]["uid"] = "1234"
    wp = parse_worker_pool(obj)
    pod = wp.worker_pod(1, "0.1.0")
    assert pod["metadata"]["name"] == "fake-gpus-1"
    assert pod["metadata"]["labels"] == {
        "app.kubernetes.io/name": "warmserve-worker",
        "app.kubernetes.io/managed-by": "warmserve",
        "warmserve.io/pool": "fake-gpus",
    }
    (owner,) = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "WorkerPool",
        "fake-gpus",
        "1234",
        True,
    )
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "warmserve/worker:0.1.0"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "POD_IP": "status.podIP",
    }
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}}  # no GPU: fake mode
    assert "nodeSelector" not in pod["spec"] and "volumes" not in pod["spec"]
    assert pod["spec"]["serviceAccountName"] == "warmserve-worker-fake-gpus"


def test_the_workers_role_names_only_the_pods_given_and_none_grants_nothing() -> None:
    obj = example("WorkerPool", "fake-gpus")
    obj["metadata"]["uid"] = "1234"
    wp = parse_worker_pool(obj)
    account, role, binding = wp.worker_rbac(["fake-gpus-1", "fake-gpus-0", "fake-gpus-1"])
    assert account["metadata"]["name"] == role["metadata"]["name"] == binding["metadata"]["name"]
    assert account["metadata"]["name"] == wp.service_account == "warmserve-worker-fake-gpus"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["pods"],
            "resourceNames": ["fake-gpus-0", "fake-gpus-1"],
            "verbs": ["get", "list", "watch", "patch"],
        }
    ]
    assert binding["roleRef"]["name"] == wp.service_account
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": wp.service_account, "namespace": "default"}
    ]
    for obj in (account, role, binding):
        ((owner),) = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("WorkerPool", "1234")
    assert wp.worker_rbac([])[1]["rules"] == []  # no resourceNames would mean every Pod
    assert wp.owns(wp.worker_pod(0, "0.1.0"))
    assert not wp.owns(pool().worker_pod(0, "0.1.0"))  # same labels, no owner: never named in the Role


def test_the_worker_command_line_is_one_the_worker_accepts() -> None:
    wp = pool()
    args = [
        a.replace("$(POD_IP)", "127.0.0.9")
        for a in wp.worker_pod(0, "0.1.0")["spec"]["containers"][0]["args"]
    ]
    parsed = build_parser().parse_args(args)
    assert parsed.kube and parsed.host == "127.0.0.9" and parsed.port == 8000
    assert (parsed.gpus, parse_size(parsed.gpu_memory), parsed.engine, parsed.pool) == (
        2,
        80 * GIB,
        "fake",
        "fake",
    )
    assert (parsed.gpu_profile, parsed.tier, parsed.speed) == ("h100", "host", 1.0)


def test_the_worker_pod_of_a_gpu_pool_asks_for_its_gpus_and_selects_their_type() -> None:
    wp = pool(
        fakeGpu=False,
        engine="vllm",
        gpuType="NVIDIA-H100-80GB-HBM3",
        template={
            "image": "registry.example/worker:1",
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "resources": {"limits": {"memory": "64Gi"}},
        },
    )
    pod = wp.worker_pod(0, "0.1.0")
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": "2"}
    assert container["image"] == "registry.example/worker:1"
    assert pod["spec"]["nodeSelector"] == {"pool": "gpu", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["spec"]["volumes"] == [
        {"name": "model-store", "hostPath": {"path": "/var/lib/warmserve/models", "type": "Directory"}}
    ]
    parsed = build_parser().parse_args(container["args"])
    assert (parsed.engine, parsed.pool, str(parsed.store)) == ("vllm", "cuda", "/var/lib/warmserve/models")
    assert "ownerReferences" not in pod["metadata"]  # an object not yet created has no uid to own it by


def test_a_real_engine_on_fake_gpus_pools_host_memory() -> None:
    args = pool(engine="torch").worker_args()
    assert args[args.index("--pool") + 1] == "host"


@pytest.mark.parametrize("index", [-1, 2, True])
def test_a_pod_index_outside_the_pool_is_refused(index: int) -> None:
    with pytest.raises(InvalidFieldError, match=r"^index: "):
        pool().worker_pod(index, "0.1.0")


def test_selectors() -> None:
    assert pool().selector() == "app.kubernetes.io/name=warmserve-worker,warmserve.io/pool=fake-gpus"
    assert worker_selector(("b", "a")) == "app.kubernetes.io/name=warmserve-worker,warmserve.io/pool in (a,b)"
    assert deployment("llama2-13b").selector() == "app.kubernetes.io/name=warmserve-worker"


def test_the_crd_enums_are_the_codes_names() -> None:
    forecast = schema("ModelDeployment")["properties"]["spec"]["properties"]["forecast"]["properties"]
    assert set(forecast["forecaster"]["enum"]) == {*FORECASTERS, NO_FORECAST}
    fake = schema("WorkerPool")["properties"]["spec"]["properties"]["fake"]["properties"]
    assert set(fake["gpuProfile"]["enum"]) == set(GPU_PROFILES)
    assert fake["tier"]["enum"] == [tier.value for tier in Tier]
    for kind in ("ModelDeployment", "WorkerPool"):
        assert schema(kind)["properties"]["spec"]["properties"]["engine"]["enum"] == list(ENGINES)
    assert crd("ModelDeployment")["spec"]["names"]["shortNames"] == ["md"]
