"""The operator's custom resources as the control plane's types: parsing and the worker Pod of a pool.

A ``ModelDeployment`` becomes a :class:`ModelDeployment` (its :class:`~warmserve.protocol.state.ModelSpec`
plus its bounds, priority, SLO, pools and forecast settings) and, against the pools that may hold it, the
decision core's :class:`~warmserve.operator.planning.snapshot.ModelConfig`. A ``WorkerPool`` becomes a
:class:`WorkerPool`, which writes the manifest of its ``i``-th worker Pod and those of its workers'
ServiceAccount, Role and RoleBinding. The CRDs in ``crds/`` are the one
source of the fields and their defaults (docs/resources.md): parsing takes an object as the API server
returns it, defaults filled in, and checks what the decision core relies on rather than repeating every
bound of the schema.

Pure: plain mappings in, frozen dataclasses and plain dicts out; no Kubernetes client. A field that is
missing or wrong raises :class:`InvalidFieldError` naming its path in the object
(``spec.model.tensorParallel``), what was expected and what was found — the operator turns it into a
``Degraded`` condition.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Any

from warmserve.operator.forecast.forecasters import FORECASTERS
from warmserve.operator.planning.snapshot import ModelConfig
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.pods import NAME_LABEL, POOL_LABEL, WORKER_APP, worker_labels
from warmserve.protocol.resource_names import API_VERSION
from warmserve.protocol.state import ModelSpec

#: The start of the name of a pool's ServiceAccount, Role and RoleBinding: ``warmserve-worker-<pool>``.
WORKER_SERVICE_ACCOUNT_PREFIX = "warmserve-worker-"
#: What a worker may do to its own Pod: read and watch it (a list or watch with the field selector
#: ``metadata.name=<pod>`` is authorized as that one Pod), patch its observed annotation.
WORKER_VERBS = ("get", "list", "watch", "patch")
WORKER_IMAGE = "warmserve/worker"
#: The node label NVIDIA's GPU feature discovery puts the GPU product in (``spec.gpuType`` selects it).
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"

ENGINES = ("fake", "torch", "vllm")
#: ``forecast.forecaster: none``: the model is served reactively only.
NO_FORECAST = "none"
HISTORY_SOURCES = ("configMap", "prometheus")
FAKE_TIERS = ("host", "disk", "remote")
#: The longest WorkerPool name: it is a label value (at most 63 characters) and ``<name>-<index>`` (index
#: below 1024, the most Pods a pool has) a Pod's hostname (a DNS label, at most 63).
POOL_NAME_MAX = 58
#: Tensor-parallel degrees a replica may have (engines shard attention heads by powers of two).
TENSOR_PARALLEL = (1, 2, 4, 8, 16, 32, 64)

# A Kubernetes quantity without sign: digits, optional fraction, optional suffix or exponent.
_QUANTITY = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<suffix>[KMGTPE]i|[mkMGTPE]|[eE][+-]?\d+)?")
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    """How one model's demand is forecast: ``forecaster`` (a name, or ``none``), the series' window and
    the horizon in seconds, and where the history lives."""

    forecaster: str
    window_s: int
    horizon_s: int
    history_source: str
    retention_s: int
    prometheus_url: str | None = None

    @property
    def enabled(self) -> bool:
        return self.forecaster != NO_FORECAST


@dataclass(frozen=True, slots=True)
class ModelDeployment:
    """One ``ModelDeployment`` resource: the model the workers load plus the deployment's own settings.

    ``replicas`` is the floor ``kubectl scale`` or an autoscaler set through ``/scale`` (``None``: unset);
    ``pools`` empty means every pool of the engine.
    """

    namespace: str
    name: str
    generation: int
    spec: ModelSpec
    engine: str
    replicas: int | None
    min_replicas: int
    max_replicas: int
    priority: float
    slo_ttft_s: float
    pools: tuple[str, ...]
    forecast: ForecastSettings

    @property
    def floor(self) -> int:
        """Serving instances always kept: the ``/scale`` replicas if set, else ``minReplicas``."""
        return self.min_replicas if self.replicas is None else self.replicas

    def fits(self, pool: WorkerPool) -> bool:
        """Whether ``pool`` may hold this model: named (or no pool named), same engine and namespace,
        enough GPUs per Pod for its tensor parallelism, and one GPU's shard within the pool size."""
        return (
            pool.namespace == self.namespace
            and (not self.pools or pool.name in self.pools)
            and pool.engine == self.engine
            and pool.gpus_per_pod >= self.spec.tensor_parallel
            and pool.pool_bytes >= self.spec.shard_bytes
        )

    def model_config(self, pools: Sequence[WorkerPool]) -> ModelConfig:
        """The decision core's view of this model on the pools that fit it.

        Its cold-start cost is the slowest fitting pool's (lowest load bandwidth, longest engine start):
        the scheduler plans for the worst place a replica may land. Raises :class:`InvalidFieldError` on
        ``spec.pools`` when no pool fits (the model cannot be served as declared).
        """
        fitting = [pool for pool in pools if self.fits(pool)]
        if not fitting:
            named = f"one of {list(self.pools)}" if self.pools else "a WorkerPool"
            raise InvalidFieldError(
                "spec.pools",
                f"{named} in namespace {self.namespace!r} with engine {self.engine}, at least "
                f"{self.spec.tensor_parallel} GPUs per Pod and poolBytes >= {self.spec.shard_bytes} "
                "(one GPU's shard)",
                sorted(f"{p.namespace}/{p.name}" for p in pools),
            )
        return ModelConfig(
            self.spec,
            load_bandwidth_bytes_per_s=min(p.load_bandwidth_bytes_per_s for p in fitting),
            init_seconds=max(p.engine_start_s for p in fitting),
            min_instances=self.floor,
            max_instances=self.max_replicas,
            priority=self.priority,
            slo_ttft_s=self.slo_ttft_s,
        )

    def selector(self) -> str:
        """The label selector of the worker Pods that may hold this model (``status.selector``)."""
        return worker_selector(self.pools)


@dataclass(frozen=True, slots=True)
class FakeEngineSettings:
    """How the fake engine times its work: GPU profile, weight tier, delay multiplier."""

    gpu_profile: str
    tier: str
    speed: float


@dataclass(frozen=True, slots=True)
class WorkerPool:
    """One ``WorkerPool`` resource: ``pods`` worker Pods of ``gpus_per_pod`` GPUs, ``pool_bytes`` each.

    ``uid`` (empty when the object has none yet) makes the Pods owned by the pool; ``resources`` holds
    the template's ``requests`` and ``limits`` as the quantities written.
    """

    namespace: str
    name: str
    uid: str
    generation: int
    pods: int
    gpus_per_pod: int
    gpu_type: str | None
    pool_bytes: int
    engine: str
    fake_gpu: bool
    fake: FakeEngineSettings
    load_bandwidth_bytes_per_s: float
    engine_start_s: float
    store: str
    port: int
    image: str | None
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    resources: Mapping[str, Mapping[str, str]]

    @property
    def pool_backend(self) -> str:
        """The worker's ``--pool``: fake-GPU mode pools host memory (fake accounting for the fake
        engine); on GPUs, the fake engine keeps its fake pool and real engines pool CUDA memory."""
        if self.engine == "fake":
            return "fake"
        return "host" if self.fake_gpu else "cuda"

    def pod_name(self, index: int) -> str:
        return f"{self.name}-{index}"

    def labels(self) -> dict[str, str]:
        """The labels of every worker Pod of this pool."""
        return worker_labels(self.name)

    def selector(self) -> str:
        """The label selector of this pool's worker Pods (``status.selector``)."""
        return worker_selector((self.name,))

    @property
    def service_account(self) -> str:
        """The ServiceAccount this pool's workers run as; its Role and RoleBinding have the same name."""
        return WORKER_SERVICE_ACCOUNT_PREFIX + self.name

    def worker_rbac(self, pods: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The manifests of this pool's ServiceAccount, Role and RoleBinding, owned by the pool. The Role
        lets the workers get, list, watch and patch the Pods named in ``pods`` and no other: the
        operator passes the pool's Pods, those wanted and those still present. No Pod named, no rule
        (a rule with no ``resourceNames`` would allow every Pod)."""
        names = sorted(set(pods))
        rules = [
            {"apiGroups": [""], "resources": ["pods"], "resourceNames": names, "verbs": list(WORKER_VERBS)}
        ]
        name = self.service_account
        account = {"metadata": self._metadata(name)}
        role = {"metadata": self._metadata(name), "rules": rules if names else []}
        binding = {
            "metadata": self._metadata(name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": self.namespace}],
        }
        return account, role, binding

    def owns(self, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` (a Pod as the API server returns it) has this pool as its owner: only such Pods
        may stay named in the workers' Role while they go (a Pod that merely carries the pool's labels
        is deleted by the operator, but its workers get no access to it)."""
        owners = obj.get("metadata", {}).get("ownerReferences") or []
        return bool(self.uid) and any(o.get("uid") == self.uid for o in owners)

    def _metadata(self, name: str) -> dict[str, Any]:
        """The metadata of an object of this pool: its name, namespace, labels and, when the pool has a
        uid, the owner reference that makes it go with the pool."""
        metadata: dict[str, Any] = {"name": name, "namespace": self.namespace, "labels": self.labels()}
        if self.uid:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": API_VERSION,
                    "kind": "WorkerPool",
                    "name": self.name,
                    "uid": self.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        return metadata

    def worker_args(self) -> list[str]:
        """The ``warmserve`` command line of a worker of this pool (the image's entrypoint is
        ``warmserve``); it binds its Pod IP and follows its own Pod's annotations."""
        args = ["worker", "--kube", "--host", "$(POD_IP)", "--port", str(self.port)]
        args += ["--gpus", str(self.gpus_per_pod), "--gpu-memory", str(self.pool_bytes)]
        args += ["--engine", self.engine, "--pool", self.pool_backend]
        if self.pool_backend != "fake":
            args += ["--store", self.store]
        if self.engine == "fake":
            args += ["--gpu-profile", self.fake.gpu_profile, "--tier", self.fake.tier]
            args += ["--speed", repr(self.fake.speed)]
        return args

    def worker_pod(self, index: int, version: str) -> dict[str, Any]:
        """The manifest of worker Pod ``index`` (``0 <= index < pods``); ``version`` tags the default
        image. Raises :class:`InvalidFieldError` on ``index`` outside the pool."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.pods:
            raise InvalidFieldError("index", f"a Pod index in [0, {self.pods})", index)
        metadata = self._metadata(self.pod_name(index))
        spec: dict[str, Any] = {
            "serviceAccountName": self.service_account,
            "restartPolicy": "Always",
            "containers": [self._container(version)],
        }
        node_selector = dict(self.node_selector)
        if self.gpu_type and not self.fake_gpu:
            node_selector[GPU_PRODUCT_LABEL] = self.gpu_type
        if node_selector:
            spec["nodeSelector"] = node_selector
        if self.tolerations:
            spec["tolerations"] = [dict(t) for t in self.tolerations]
        if self.pool_backend != "fake":
            spec["volumes"] = [{"name": "model-store", "hostPath": {"path": self.store, "type": "Directory"}}]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}

    def _container(self, version: str) -> dict[str, Any]:
        resources = {kind: dict(values) for kind, values in self.resources.items()}
        if not self.fake_gpu:
            resources.setdefault("limits", {})[GPU_RESOURCE] = str(self.gpus_per_pod)
        container: dict[str, Any] = {
            "name": "worker",
            "image": self.image or f"{WORKER_IMAGE}:{version}",
            "args": self.worker_args(),
            "env": [
                _field_env("POD_NAME", "metadata.name"),
                _field_env("POD_NAMESPACE", "metadata.namespace"),
                _field_env("POD_IP", "status.podIP"),
            ],
            "ports": [{"name": "http", "containerPort": self.port}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": self.port}, "periodSeconds": 2},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": self.port}, "periodSeconds": 10},
            # Liveness waits until the worker first answers (up to 5 minutes): a worker slow to start (a
            # loaded node, an engine's imports) is not killed while starting, which would only start it again.
            "startupProbe": {
                "httpGet": {"path": "/healthz", "port": self.port},
                "periodSeconds": 1,
                "failureThreshold": 300,
            },
        }
        if resources:
            container["resources"] = resources
        if self.pool_backend != "fake":
            container["volumeMounts"] = [{"name": "model-store", "mountPath": self.store}]
        return container


def worker_selector(pools: Sequence[str]) -> str:
    """The label selector of the worker Pods of ``pools`` (every worker Pod when empty)."""
    selector = f"{NAME_LABEL}={WORKER_APP}"
    if len(pools) == 1:
        return f"{selector},{POOL_LABEL}={pools[0]}"
    if pools:
        return f"{selector},{POOL_LABEL} in ({','.join(sorted(pools))})"
    return selector


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


# --- parsing --------------------------------------------------------------------------------------


def parse_model_deployment(obj: Mapping[str, Any]) -> ModelDeployment:
    """A ``ModelDeployment`` as the API server returns it (defaults filled in); raises
    :class:`InvalidFieldError` naming the first bad field."""
    namespace, name, generation = _metadata(obj, "ModelDeployment")
    spec = _mapping(obj.get("spec"), "spec")
    model = _mapping(spec.get("model"), "spec.model")
    engine = _choice(spec.get("engine"), "spec.engine", ENGINES)
    serving = _mapping(spec.get("serving"), "spec.serving")
    concurrency = _int(serving.get("maxConcurrency"), "spec.serving.maxConcurrency", minimum=1)
    given = serving.get("contextLength")
    context_length = 0 if given is None else _int(given, "spec.serving.contextLength", minimum=1)
    model_spec = _model_spec(model, name, engine, concurrency, context_length)
    min_replicas = _int(spec.get("minReplicas"), "spec.minReplicas")
    max_replicas = _int(spec.get("maxReplicas"), "spec.maxReplicas", minimum=max(1, min_replicas))
    replicas = spec.get("replicas")
    if replicas is not None:
        replicas = _int(replicas, "spec.replicas", minimum=min_replicas, maximum=max_replicas)
    slo = _mapping(spec.get("slo"), "spec.slo")
    ttft = _number(slo.get("ttftSeconds"), "spec.slo.ttftSeconds")
    if ttft <= 0:
        raise InvalidFieldError("spec.slo.ttftSeconds", "a number of seconds > 0", ttft)
    pools = _sequence(spec.get("pools", []), "spec.pools")
    return ModelDeployment(
        namespace=namespace,
        name=name,
        generation=generation,
        spec=model_spec,
        engine=engine,
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        priority=_number(spec.get("priority"), "spec.priority"),
        slo_ttft_s=ttft,
        pools=tuple(_str(p, f"spec.pools[{i}]") for i, p in enumerate(pools)),
        forecast=_forecast(_mapping(spec.get("forecast"), "spec.forecast")),
    )


def _model_spec(
    model: Mapping[str, Any], name: str, engine: str, max_concurrency: int, context_length: int
) -> ModelSpec:
    """``spec.model`` as the workers' :class:`ModelSpec`, serving ``max_concurrency`` requests at once
    per instance, each at most ``context_length`` tokens long (0: not given); named ``servedName``, else
    the resource's ``name``."""
    served = _str(model.get("servedName", name), "spec.model.servedName")
    if any(c.isspace() for c in served):
        raise InvalidFieldError("spec.model.servedName", "a name without whitespace", served)
    fmt = _choice(model.get("format"), "spec.model.format", ("safetensors", "fake"))
    if (fmt == "fake") != (engine == "fake"):
        wanted = "fake" if engine == "fake" else "safetensors"
        raise InvalidFieldError("spec.model.format", f"{wanted} for engine {engine}", fmt)
    tp = _int(model.get("tensorParallel"), "spec.model.tensorParallel", minimum=1)
    if tp not in TENSOR_PARALLEL:
        raise InvalidFieldError("spec.model.tensorParallel", f"a power of two in {list(TENSOR_PARALLEL)}", tp)
    args = _mapping(model.get("engineArgs", {}), "spec.model.engineArgs")
    return ModelSpec(
        name=served,
        weights=_weights(model.get("uri"), fmt),
        weight_bytes=parse_quantity(model.get("weightBytes"), "spec.model.weightBytes"),
        tensor_parallel=tp,
        kv_bytes_per_token=_int(model.get("kvBytesPerToken"), "spec.model.kvBytesPerToken"),
        max_concurrency=max_concurrency,
        context_length=context_length,
        engine_args=MappingProxyType(
            {_str(k, "spec.model.engineArgs"): _str(v, f"spec.model.engineArgs.{k}") for k, v in args.items()}
        ),
    )


def _weights(uri: object, fmt: str) -> str:
    """``spec.model.uri`` as a worker reads it: a path in the node-local store, or ``fake://<shape>``."""
    text = _str(uri, "spec.model.uri")
    if fmt == "fake":
        if not text.startswith("fake://"):
            raise InvalidFieldError("spec.model.uri", "fake://<shape> for format fake", text)
        return text
    path = text.removeprefix("file://")
    if not path.startswith("/"):
        raise InvalidFieldError("spec.model.uri", "an absolute path or a file:/// URI", text)
    return path


def _forecast(forecast: Mapping[str, Any]) -> ForecastSettings:
    history = _mapping(forecast.get("history"), "spec.forecast.history")
    window = _int(forecast.get("windowSeconds"), "spec.forecast.windowSeconds", minimum=1)
    source = _choice(history.get("source"), "spec.forecast.history.source", HISTORY_SOURCES)
    url = history.get("prometheusUrl")
    if url is not None:
        url = _str(url, "spec.forecast.history.prometheusUrl")
    if source == "prometheus" and not url:
        raise InvalidFieldError("spec.forecast.history.prometheusUrl", "a URL for source prometheus", url)
    return ForecastSettings(
        forecaster=_choice(
            forecast.get("forecaster"), "spec.forecast.forecaster", (*FORECASTERS, NO_FORECAST)
        ),
        window_s=window,
        horizon_s=_int(forecast.get("horizonSeconds"), "spec.forecast.horizonSeconds", minimum=window),
        history_source=source,
        retention_s=_int(
            history.get("retentionSeconds"), "spec.forecast.history.retentionSeconds", minimum=window
        ),
        prometheus_url=url,
    )


def parse_worker_pool(obj: Mapping[str, Any]) -> WorkerPool:
    """A ``WorkerPool`` as the API server returns it (defaults filled in); raises
    :class:`InvalidFieldError` naming the first bad field."""
    namespace, name, generation = _metadata(obj, "WorkerPool")
    if len(name) > POOL_NAME_MAX:
        raise InvalidFieldError("metadata.name", f"at most {POOL_NAME_MAX} characters", name)
    uid = _mapping(obj.get("metadata"), "metadata").get("uid", "")
    spec = _mapping(obj.get("spec"), "spec")
    fake = _mapping(spec.get("fake"), "spec.fake")
    template = _mapping(spec.get("template"), "spec.template")
    gpu_type = spec.get("gpuType")
    image = template.get("image")
    store = _str(spec.get("store"), "spec.store")
    if not store.startswith("/"):
        raise InvalidFieldError("spec.store", "an absolute path", store)
    return WorkerPool(
        namespace=namespace,
        name=name,
        uid=_str(uid, "metadata.uid", empty=True),
        generation=generation,
        pods=_int(spec.get("pods"), "spec.pods"),
        gpus_per_pod=_int(spec.get("gpusPerPod"), "spec.gpusPerPod", minimum=1),
        gpu_type=None if gpu_type is None else _str(gpu_type, "spec.gpuType"),
        pool_bytes=parse_quantity(spec.get("poolBytes"), "spec.poolBytes"),
        engine=_choice(spec.get("engine"), "spec.engine", ENGINES),
        fake_gpu=_bool(spec.get("fakeGpu"), "spec.fakeGpu"),
        fake=FakeEngineSettings(
            gpu_profile=_str(fake.get("gpuProfile"), "spec.fake.gpuProfile"),
            tier=_choice(fake.get("tier"), "spec.fake.tier", FAKE_TIERS),
            speed=_number(fake.get("speed"), "spec.fake.speed"),
        ),
        load_bandwidth_bytes_per_s=parse_quantity(
            spec.get("loadBandwidth"), "spec.loadBandwidth", whole=False
        ),
        engine_start_s=_number(spec.get("engineStartSeconds"), "spec.engineStartSeconds"),
        store=store,
        port=_int(spec.get("port"), "spec.port", minimum=1, maximum=65535),
        image=None if image is None else _str(image, "spec.template.image"),
        node_selector=_string_map(template.get("nodeSelector", {}), "spec.template.nodeSelector"),
        tolerations=tuple(
            MappingProxyType(dict(_mapping(t, f"spec.template.tolerations[{i}]")))
            for i, t in enumerate(_sequence(template.get("tolerations", []), "spec.template.tolerations"))
        ),
        resources=_resources(_mapping(template.get("resources", {}), "spec.template.resources")),
    )


def _resources(resources: Mapping[str, Any]) -> Mapping[str, Mapping[str, str]]:
    """``template.resources``: requests and limits as quantity strings, GPUs excluded (``gpusPerPod``
    says them)."""
    out: dict[str, Mapping[str, str]] = {}
    for kind in ("requests", "limits"):
        if kind not in resources:
            continue
        where = f"spec.template.resources.{kind}"
        values = _mapping(resources[kind], where)
        if GPU_RESOURCE in values:
            raise InvalidFieldError(f"{where}", f"no {GPU_RESOURCE} (spec.gpusPerPod sets it)", dict(values))
        quantities = {}
        for key, value in values.items():
            parse_quantity(value, f"{where}.{key}", whole=False, minimum_zero=True)
            quantities[_str(key, where)] = str(value)
        out[kind] = MappingProxyType(quantities)
    return MappingProxyType(out)


def parse_quantity(value: object, field: str, *, whole: bool = True, minimum_zero: bool = False) -> int:
    """A Kubernetes quantity (``80Gi``, ``1.5G``, ``250m``, ``2e9``, or a number) as an integer.

    ``whole``: the quantity must be a whole number (bytes); otherwise it is rounded up. It must be
    positive, or >= 0 with ``minimum_zero``. Raises :class:`InvalidFieldError` on ``field`` otherwise.
    """
    if isinstance(value, bool):
        exact = None
    elif isinstance(value, int):
        exact = Fraction(value)
    elif isinstance(value, str):
        exact = _quantity(value)
    else:
        exact = None
    sign = "a non-negative" if minimum_zero else "a positive"
    expected = f"{sign} {'whole ' if whole else ''}quantity such as 80Gi or 2e9"
    if exact is None or exact < 0 or (exact == 0 and not minimum_zero) or (whole and exact.denominator != 1):
        raise InvalidFieldError(field, expected, value)
    return math.ceil(exact)


def _quantity(text: str) -> Fraction | None:
    match = _QUANTITY.fullmatch(text)
    if match is None:
        return None
    number, suffix = Fraction(match.group("number")), match.group("suffix") or ""
    if suffix in _BINARY:
        return number * Fraction(2) ** _BINARY[suffix]
    exponent = _DECIMAL[suffix] if suffix in _DECIMAL else int(suffix[1:] or 0)
    return number * Fraction(10) ** exponent


# --- field readers: each names the field it rejects ------------------------------------------------


def _metadata(obj: Mapping[str, Any], kind: str) -> tuple[str, str, int]:
    """(namespace, name, generation) of an object of ``kind``; generation 0 when it has none yet."""
    doc = _mapping(obj, kind)
    if doc.get("kind", kind) != kind:
        raise InvalidFieldError("kind", kind, doc.get("kind"))
    metadata = _mapping(doc.get("metadata"), "metadata")
    return (
        _str(metadata.get("namespace", "default"), "metadata.namespace"),
        _str(metadata.get("name"), "metadata.name"),
        _int(metadata.get("generation", 0), "metadata.generation"),
    )


def _mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidFieldError(field, "an object (the CRD defaults it: is it installed?)", value)
    return value


def _sequence(value: object, field: str) -> Sequence[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidFieldError(field, "a list", value)
    return value


def _str(value: object, field: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty):
        raise InvalidFieldError(field, "a non-empty string" if not empty else "a string", value)
    return value


def _choice(value: object, field: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InvalidFieldError(field, f"one of {list(choices)}", value)
    return str(value)


def _int(value: object, field: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidFieldError(field, f"an integer >= {minimum}", value)
    if maximum is not None and value > maximum:
        raise InvalidFieldError(field, f"an integer in [{minimum}, {maximum}]", value)
    return value


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidFieldError(field, "a finite number >= 0", value)
    return float(value)


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidFieldError(field, "true or false", value)
    return value


def _string_map(value: object, field: str) -> Mapping[str, str]:
    doc = _mapping(value, field)
    return MappingProxyType({_str(k, field): _str(v, f"{field}.{k}", empty=True) for k, v in doc.items()})
