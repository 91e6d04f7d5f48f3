"""The CRDs against the real API server: they install and become Established, every example applies, the
server fills in the defaults (exactly those the offline defaulting of the parsing tests fills in), refuses a
bad object with the schema's or the CEL rule's message naming the field, prints the columns, and serves the
/scale and /status subresources; a worker Pod written by ``WorkerPool.worker_pod`` runs and reports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.waiting import wait_for
from tests.crds.crd_objects import CRDS, crd, examples, with_defaults
from warmserve.operator.resources import parse_model_deployment, parse_worker_pool
from warmserve.protocol.resource_names import GROUP, VERSION
from warmserve.protocol.state import OBSERVED_ANNOTATION, ObservedState

pytestmark = pytest.mark.kube
WAIT_S = 30.0
PLURALS = {"ModelDeployment": "modeldeployments", "WorkerPool": "workerpools"}


@pytest.fixture(scope="module")
def crds(kube_cluster: Cluster) -> Iterator[None]:
    """The two CRDs installed from ``crds/`` and Established. They stay for the rest of the session (the
    cluster goes with it): applying them again is a no-op, and other modules may use them meanwhile."""
    kube_cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
    with kube_cluster.api_client() as client:
        extensions = kubernetes.client.ApiextensionsV1Api(client)
        for kind in PLURALS:
            name = crd(kind)["metadata"]["name"]

            def established(name: str = name) -> bool:
                conditions = extensions.read_custom_resource_definition(name).status.conditions or []
                return any(c.type == "Established" and c.status == "True" for c in conditions)

            wait_for(f"{name} to be Established", established)
    yield


@pytest.fixture
def api(kube_cluster: Cluster, crds: None) -> Iterator[kubernetes.client.ApiClient]:
    with kube_cluster.api_client() as client:
        yield client


def create(api: kubernetes.client.ApiClient, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(api)
    created: dict[str, Any] = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[obj["kind"]], obj
    )
    return created


def refusal(api: kubernetes.client.ApiClient, namespace: str, obj: dict[str, Any]) -> str:
    """The API server's message refusing ``obj`` (the test fails if it is accepted)."""
    with pytest.raises(kubernetes.client.ApiException) as refused:
        create(api, namespace, obj)
    assert refused.value.status == 422
    message: str = json.loads(refused.value.body)["message"]
    return message


def raw(name: str) -> dict[str, Any]:
    """The example manifest ``name`` as written (no defaults)."""
    return examples()[name]


def minimal_deployment(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "m"},
        "spec": {
            "engine": "fake",
            "model": {"uri": "fake://llama2-7b", "format": "fake", "weightBytes": "13Gi"},
            **spec,
        },
    }


def minimal_pool(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkerPool", "metadata": {"name": "p"}, "spec": spec}


def test_every_example_applies_gets_the_defaults_the_parser_expects_and_parses(
    kube_cluster: Cluster, kube_namespace: str, api: kubernetes.client.ApiClient
) -> None:
    kube_cluster.kubectl("apply", "-n", kube_namespace, "-f", str(CRDS.parent / "examples"))
    custom = kubernetes.client.CustomObjectsApi(api)
    pools = []
    deployments = []
    for doc in examples().values():
        stored = custom.get_namespaced_custom_object(
            GROUP, VERSION, kube_namespace, PLURALS[doc["kind"]], doc["metadata"]["name"]
        )
        assert stored["spec"] == with_defaults(doc)["spec"]
        if doc["kind"] == "WorkerPool":
            pools.append(parse_worker_pool(stored))
        else:
            deployments.append(parse_model_deployment(stored))
    assert len(deployments) >= 2 and pools
    for md in deployments:
        assert md.model_config(pools).spec.weight_bytes > 0


def test_the_server_fills_in_the_defaults(kube_namespace: str, api: kubernetes.client.ApiClient) -> None:
    md = create(api, kube_namespace, minimal_deployment())["spec"]
    assert (md["minReplicas"], md["maxReplicas"], md["priority"]) == (0, 8, 1)
    assert (md["model"]["tensorParallel"], md["model"]["kvBytesPerToken"]) == (1, 0)
    assert md["serving"] == {"maxConcurrency": 8}
    assert md["slo"] == {"ttftSeconds": 2}
    assert md["forecast"] == {
        "forecaster": "auto",
        "windowSeconds": 60,
        "horizonSeconds": 120,
        "history": {"source": "configMap", "retentionSeconds": 604800},
    }
    assert "replicas" not in md  # unset: the floor is minReplicas
    wp = create(api, kube_namespace, minimal_pool())["spec"]
    assert (wp["pods"], wp["gpusPerPod"], wp["poolBytes"], wp["engine"], wp["fakeGpu"]) == (
        1,
        1,
        "80Gi",
        "vllm",
        False,
    )
    assert wp["fake"] == {"gpuProfile": "h100", "tier": "host", "speed": 1}
    assert wp["template"] == {}


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            minimal_deployment(minReplicas=3, maxReplicas=2),
            "spec.minReplicas: Invalid value: minReplicas must not exceed maxReplicas",
        ),
        (
            minimal_deployment(
                model={"uri": "fake://x", "format": "fake", "weightBytes": 1, "tensorParallel": 3}
            ),
            "spec.model.tensorParallel: Invalid value: 3: tensorParallel must be a power of two",
        ),
        (
            minimal_deployment(replicas=9, maxReplicas=4),
            "spec.replicas: Invalid value: replicas must lie between minReplicas and maxReplicas",
        ),
        (
            minimal_deployment(model={"uri": "fake://x", "format": "fake", "weightBytes": "-13Gi"}),
            'spec.model.weightBytes: Invalid value: "-13Gi": weightBytes must be a positive whole number',
        ),
        (
            minimal_deployment(model={"uri": "hf://meta/llama", "weightBytes": 1}, engine="vllm"),
            'spec.model.uri: Invalid value: "hf://meta/llama": uri must be an absolute path, a file:/// URI',
        ),
        (
            minimal_deployment(engine="vllm"),
            "spec.model.format: Invalid value: format fake goes with engine fake",
        ),
        (
            minimal_deployment(engine="tpu"),
            'spec.engine: Unsupported value: "tpu": supported values: "fake", "torch", "vllm"',
        ),
        (
            minimal_deployment(forecast={"forecaster": "prophet"}),
            'spec.forecast.forecaster: Unsupported value: "prophet"',
        ),
        (
            minimal_deployment(forecast={"history": {"source": "prometheus"}}),
            "spec.forecast.history.prometheusUrl: Invalid value: history source prometheus needs",
        ),
        (
            minimal_deployment(slo={"ttftSeconds": 0}),
            "spec.slo.ttftSeconds: Invalid value: 0: spec.slo.ttftSeconds in body should be greater than 0",
        ),
        (
            minimal_pool(poolBytes=-1),
            "spec.poolBytes: Invalid value: -1: poolBytes must be a positive whole number of bytes",
        ),
        (
            minimal_pool(poolBytes="-80Gi"),
            'spec.poolBytes: Invalid value: "-80Gi": poolBytes must be a positive whole number of bytes',
        ),
        (
            minimal_pool(engine="tpu"),
            'spec.engine: Unsupported value: "tpu": supported values: "fake", "torch", "vllm"',
        ),
        (
            minimal_pool() | {"metadata": {"name": "p" * 59}},
            "Invalid value: a WorkerPool name is at most 58 characters",
        ),
        (
            minimal_pool(gpusPerPod=0),
            "spec.gpusPerPod: Invalid value: 0: spec.gpusPerPod in body should be greater than or equal to 1",
        ),
        (
            minimal_pool(template={"resources": {"limits": {"nvidia.com/gpu": 2}}}),
            "spec.template.resources.limits: Invalid value: set the GPUs of a worker Pod with",
        ),
    ],
    ids=lambda value: None if isinstance(value, str) else f"{value['kind']}:{json.dumps(value['spec'])[:60]}",
)
def test_a_bad_object_is_refused_with_a_message_naming_the_field(
    kube_namespace: str, api: kubernetes.client.ApiClient, obj: dict[str, Any], message: str
) -> None:
    assert message in refusal(api, kube_namespace, obj)


def _table(api: kubernetes.client.ApiClient, namespace: str, plural: str) -> dict[str, Any]:
    """The list of ``plural`` in the API's Table format (what ``kubectl get`` prints)."""
    response = api.call_api(
        "GET",
        f"{api.configuration.host}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    response.read()
    table: dict[str, Any] = json.loads(response.data)
    return table


def test_kubectl_get_prints_the_columns(
    kube_cluster: Cluster, kube_namespace: str, api: kubernetes.client.ApiClient
) -> None:
    create(api, kube_namespace, raw("workerpool-fake-gpus.yaml"))
    created = create(api, kube_namespace, raw("modeldeployment-llama3-8b-tp2.yaml"))
    custom = kubernetes.client.CustomObjectsApi(api)
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        kube_namespace,
        "modeldeployments",
        created["metadata"]["name"],
        {
            "status": {
                "servedName": "llama3-8b",
                "replicas": {"serving": 1, "prewarmed": 2, "loading": 0},
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "lastTransitionTime": "2026-12-04T05:00:00Z",
                        "reason": "Serving",
                        "message": "1 instance serving",
                    }
                ],
            }
        },
    )
    table = _table(api, kube_namespace, "modeldeployments")
    columns = [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0]
    assert columns == ["Name", "Model", "Engine", "TP", "Min", "Max", "Serving", "Prewarmed", "Ready", "Age"]
    (row,) = table["rows"]
    assert row["cells"][:9] == ["llama3-8b", "llama3-8b", "fake", 2, 0, 2, 1, 2, "True"]
    pools = _table(api, kube_namespace, "workerpools")
    assert [c["name"] for c in pools["columnDefinitions"] if c["priority"] == 0] == [
        "Name",
        "Engine",
        "Pods",
        "Ready",
        "GPUs/Pod",
        "Pool",
        "Age",
    ]
    # the short names and the category, as a user types them
    out = kube_cluster.kubectl("get", "md,wp", "-n", kube_namespace)
    assert "llama3-8b" in out and "fake-gpus" in out
    assert kube_cluster.kubectl("get", "warmserve", "-n", kube_namespace, "-o", "name").split() == [
        "modeldeployment.warmserve.io/llama3-8b",
        "workerpool.warmserve.io/fake-gpus",
    ]


def test_the_scale_subresource_reads_and_sets_the_floor_within_the_bounds(
    kube_cluster: Cluster, kube_namespace: str, api: kubernetes.client.ApiClient
) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    name = create(api, kube_namespace, raw("modeldeployment-llama3-8b-tp2.yaml"))["metadata"]["name"]
    args = (GROUP, VERSION, kube_namespace, "modeldeployments", name)
    selector = "app.kubernetes.io/name=warmserve-worker,warmserve.io/pool=fake-gpus"
    custom.patch_namespaced_custom_object_status(
        *args, {"status": {"replicas": {"serving": 1}, "selector": selector}}
    )
    scale = custom.get_namespaced_custom_object_scale(*args)
    assert (scale["spec"]["replicas"], scale["status"]["replicas"], scale["status"]["selector"]) == (
        1,
        1,
        selector,
    )
    kube_cluster.kubectl("scale", "-n", kube_namespace, f"md/{name}", "--replicas=2")
    assert custom.get_namespaced_custom_object(*args)["spec"]["replicas"] == 2
    with pytest.raises(kubernetes.client.ApiException) as refused:
        custom.patch_namespaced_custom_object_scale(*args, {"spec": {"replicas": 5}})  # maxReplicas is 2
    assert refused.value.status == 422
    assert (
        "replicas must lie between minReplicas and maxReplicas" in json.loads(refused.value.body)["message"]
    )
    pool_name = create(api, kube_namespace, raw("workerpool-fake-gpus.yaml"))["metadata"]["name"]
    pool_args = (GROUP, VERSION, kube_namespace, "workerpools", pool_name)
    custom.patch_namespaced_custom_object_scale(*pool_args, {"spec": {"replicas": 3}})
    assert custom.get_namespaced_custom_object(*pool_args)["spec"]["pods"] == 3


def test_status_is_a_subresource_apart_from_spec(
    kube_namespace: str, api: kubernetes.client.ApiClient
) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    obj = minimal_deployment()
    obj["status"] = {"replicas": {"serving": 5}}
    created = create(api, kube_namespace, obj)
    assert "status" not in created  # the main resource ignores status
    args = (GROUP, VERSION, kube_namespace, "modeldeployments", "m")
    status: dict[str, Any] = {
        "observedGeneration": 1,
        "replicas": {"serving": 1, "prewarmed": 1, "loading": 0},
        "lastForecast": {"mean": 0.5, "peak": 1.5, "time": "2026-12-04T05:00:00Z"},
        "lastColdStart": {"time": "2026-12-04T04:59:00Z", "reason": "NoPrewarmedReplica"},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "observedGeneration": 1,
                "lastTransitionTime": "2026-12-04T05:00:00Z",
                "reason": "Serving",
                "message": "1 instance serving",
            }
        ],
    }
    after = custom.patch_namespaced_custom_object_status(
        *args, {"status": status, "spec": {"maxReplicas": 1}}
    )
    assert after["status"] == status
    assert after["spec"]["maxReplicas"] == 8  # the status endpoint ignores spec
    assert after["metadata"]["generation"] == created["metadata"]["generation"]
    bad = {"status": {"conditions": [{**status["conditions"][0], "status": "Maybe"}]}}
    with pytest.raises(kubernetes.client.ApiException) as refused:
        custom.patch_namespaced_custom_object_status(*args, bad)
    assert 'Unsupported value: "Maybe"' in json.loads(refused.value.body)["message"]


@pytest.mark.slow
def test_the_worker_pod_of_a_pool_runs_and_reports_its_gpus(
    kube_cluster: Cluster, kube_namespace: str, api: kubernetes.client.ApiClient
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    pool = parse_worker_pool(create(api, kube_namespace, raw("workerpool-fake-gpus.yaml")))
    # The pool's own RBAC, naming its Pod only: the worker's list-then-watch on its name and its patch pass.
    account, role, binding = pool.worker_rbac([pool.pod_name(0)])
    core.create_namespaced_service_account(kube_namespace, account)
    rbac.create_namespaced_role(kube_namespace, role)
    rbac.create_namespaced_role_binding(kube_namespace, binding)
    core.create_namespaced_pod(kube_namespace, pool.worker_pod(0, "test"))

    def observed() -> ObservedState | None:
        pod = core.read_namespaced_pod(pool.pod_name(0), kube_namespace)
        text = (pod.metadata.annotations or {}).get(OBSERVED_ANNOTATION)
        return ObservedState.from_json(text) if text else None

    # a worker process starts in seconds; the margin is for a machine shared with other test runs
    state = wait_for("the worker to report its observed state", observed, timeout=120)
    assert state.worker == pool.pod_name(0) and state.ready
    assert [(g.index, g.capacity_bytes) for g in state.gpus] == [(0, pool.pool_bytes), (1, pool.pool_bytes)]
    pod = core.read_namespaced_pod(pool.pod_name(0), kube_namespace)
    assert pod.metadata.owner_references[0].uid == pool.uid
