"""The end-to-end scenario a platform team lives through, on any cluster (docs/e2e.md).

``helm install`` (two operators, the gateway) → a fake-GPU WorkerPool and two ModelDeployments: ``ramp``,
whose forecast history says its load rises every day at this time, and ``cold``, served reactively only
→ OpenAI requests through the gateway with the official ``openai`` client, plain and streamed → the ramp:
replicas of ``ramp`` are loaded *before* its load arrives, and its first requests are answered far faster
than the first request of ``cold`` (a cold start) → a worker Pod deleted under load: no request lost → the
leading operator's Pod deleted: serving goes on and the standby takes the Lease → ``helm uninstall``: no
object of the release is left (and, where the cluster can say, no process).

The cluster is a :class:`Target`: the local real control plane of ``e2e/harness`` (``e2e/test_scenario.py``)
or kind (``e2e/kind/``). Every step raises :class:`ScenarioError` naming what went wrong, or
:class:`e2e.harness.waiting.TimedOut` naming what did not happen in time.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import kubernetes.client
import openai
import yaml

from e2e.harness.waiting import wait_for
from warmserve.protocol.resource_names import GROUP, MODEL_DEPLOYMENTS, VERSION, WORKER_POOLS

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "warmserve"
POOL = "fake-gpus"
WINDOW_S = 20  # forecast windows short enough for the forecast to act within the scenario
DAY_WINDOWS = 86_400 // WINDOW_S
RAMP_IN_S = 100.0  # the ramp starts this long after the history is written
RAMP_CONCURRENCY = 6
WAIT_S = 120.0
T = TypeVar("T")


class ScenarioError(AssertionError):
    """A step of the scenario did not happen (in time)."""


class Target(Protocol):
    """What the scenario needs of a cluster."""

    api: kubernetes.client.ApiClient
    namespace: str

    def helm(self, *args: str) -> str:
        """Run helm in the namespace; raises on failure."""

    def gateway_url(self, pod: kubernetes.client.V1Pod) -> str:
        """The base URL that reaches the gateway Pod from here."""

    def processes_of_namespace(self) -> list[int] | None:
        """The processes still running for the namespace's Pods (None: the cluster cannot say)."""


@dataclass
class Figures:
    """What the scenario measured, printed by the test."""

    ramp_ttft_s: list[float] = field(default_factory=list)
    ahead: dict[str, Any] = field(default_factory=dict)
    cold_ttft_s: float = math.nan
    ready_before_ramp_s: float = math.nan
    requests_during_pod_deletion: int = 0
    requests_during_operator_kill: int = 0
    takeover_s: float = math.nan


def example(name: str) -> dict[str, Any]:
    """An example manifest of ``examples/``."""
    loaded: dict[str, Any] = yaml.safe_load((REPO / "examples" / name).read_text())
    return loaded


def deployment(name: str, forecaster: str) -> dict[str, Any]:
    """A ModelDeployment of the example model under another name, scale to zero, with ``forecaster``."""
    obj = example("modeldeployment-llama2-7b.yaml")
    obj["metadata"] = {"name": name}
    spec = obj["spec"]
    spec["model"]["servedName"] = name
    spec["serving"]["maxConcurrency"] = 4
    spec["minReplicas"] = 0
    spec["forecast"] = {"forecaster": forecaster, "windowSeconds": WINDOW_S, "horizonSeconds": 120}
    return obj


def ramp_history(now: float) -> dict[str, Any]:
    """A day and a bit of ``ramp``'s history, idle except for a rise a day before ``now + RAMP_IN_S``: the
    ConfigMap the operator keeps (docs/operator.md, Forecasts), as a model that ramps daily leaves it."""
    last = int(now // WINDOW_S) - 1
    first = last - DAY_WINDOWS - 30
    mean = [0.0] * (last - first + 1)
    peak = [0.0] * (last - first + 1)
    start = int((now + RAMP_IN_S) // WINDOW_S) - DAY_WINDOWS
    for k in range(start - 1, start + 6):
        mean[k - first], peak[k - first] = RAMP_CONCURRENCY * 0.8, float(RAMP_CONCURRENCY)
    history = {"windowSeconds": WINDOW_S, "firstWindow": first, "mean": mean, "peak": peak}
    return {
        "metadata": {"name": "ramp-forecast-history"},
        "data": {"history.json": json.dumps(history)},
    }


class Scenario:
    """The steps, in order (:meth:`run`); each checks what a user would check."""

    def __init__(self, target: Target, chart_values: Sequence[str] = ()) -> None:
        self.t = target
        self.ns = target.namespace
        self.core = kubernetes.client.CoreV1Api(target.api)
        self.custom = kubernetes.client.CustomObjectsApi(target.api)
        self.coordination = kubernetes.client.CoordinationV1Api(target.api)
        self.values = list(chart_values)
        self.figures = Figures()
        self.ramp_at = math.inf

    def run(self) -> Figures:
        self.install()
        self.prewarm_ahead_of_the_ramp()
        self.serve_openai()
        self.ramp()
        self.delete_a_worker_pod_under_load()
        self.kill_the_leading_operator()
        self.uninstall()
        return self.figures

    # -- steps -------------------------------------------------------------------------------------------
    def install(self) -> None:
        values = ["--set", "operator.replicas=2", "--set", "operator.lease.duration=5"]
        values += ["--set-json", "operator.tick=0.5", "--set-json", "operator.statusInterval=1", *self.values]
        self.t.helm("install", "ws", str(CHART), *values)
        self.running("app.kubernetes.io/name=warmserve-operator", 2)
        self.running("app.kubernetes.io/name=warmserve-gateway", 1)
        self.core.create_namespaced_config_map(self.ns, ramp_history(time.time()))
        self.ramp_at = time.time() + RAMP_IN_S
        pool = example("workerpool-fake-gpus.yaml")
        pool["spec"]["fakeGpu"] = (
            False  # Pods ask for nvidia.com/gpu, as on a GPU cluster (the engine is fake)
        )
        self.create(WORKER_POOLS, pool)
        self.create(MODEL_DEPLOYMENTS, deployment("ramp", "seasonal-naive-1d"))
        self.create(MODEL_DEPLOYMENTS, deployment("cold", "none"))
        self.running(f"warmserve.io/pool={POOL}", 2)

    def serve_openai(self) -> None:
        """The official client, plain and streamed, on the model nothing has loaded yet: ``cold``'s first
        request is a cold start (its TTFT is measured), the next ones are served warm."""
        client = openai.OpenAI(base_url=f"{self.gateway()}/v1", api_key="unused", max_retries=0, timeout=60)
        models = wait_for(
            "the gateway to list both models", lambda: self.listed(client, {"ramp", "cold"}), WAIT_S
        )
        assert {"ramp", "cold"} <= models
        started = time.monotonic()
        stream = client.chat.completions.create(
            model="cold", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
        )
        first = None
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - started
        if first is None:
            raise ScenarioError("the streamed chat completion of cold sent no content")
        self.figures.cold_ttft_s = first
        plain = client.completions.create(model="cold", prompt="hello", max_tokens=3)
        if plain.usage is None or plain.usage.completion_tokens != 3:
            raise ScenarioError(f"a plain completion of cold came back as {plain}")

    def prewarm_ahead_of_the_ramp(self) -> None:
        """Before any request, the forecast alone loads ``ramp`` (its history says its load is coming),
        while ``cold`` (no forecast) stays unloaded."""

        def loaded() -> dict[str, Any] | None:
            status = self.status("ramp")
            replicas = status.get("replicas") or {}
            return status if replicas.get("serving", 0) + replicas.get("prewarmed", 0) else None

        status = wait_for("replicas of ramp ahead of its ramp", loaded, timeout=self.ramp_at - time.time())
        self.figures.ready_before_ramp_s = self.ramp_at - time.time()
        self.figures.ahead = {"replicas": status["replicas"], "forecast": status.get("lastForecast")}
        cold = self.status("cold").get("replicas") or {}
        if cold.get("serving", 0) + cold.get("prewarmed", 0) + cold.get("loading", 0):
            raise ScenarioError(f"cold, with no forecast and no request, was loaded too: {cold}")
        if (status.get("lastForecast") or {}).get("peak", 0) < 1:
            raise ScenarioError(f"ramp was loaded without a forecast of its ramp: {status}")

    def ramp(self) -> None:
        """At the ramp, ``ramp``'s requests are served warm, every one answered."""
        time.sleep(max(0.0, self.ramp_at - time.time()))
        results = asyncio.run(self.load("ramp", RAMP_CONCURRENCY, 20.0))
        self.figures.ramp_ttft_s = [ttft for ok, ttft in results if ok]
        failed = [r for r in results if not r[0]]
        if failed:
            raise ScenarioError(f"{len(failed)} of {len(results)} requests of the ramp failed")

    def delete_a_worker_pod_under_load(self) -> None:
        """Delete the worker Pod serving ``ramp`` while requests run: every request is answered."""

        def delete_serving_pod() -> None:
            pods = self.core.list_namespaced_pod(self.ns, label_selector=f"warmserve.io/pool={POOL}").items
            self.core.delete_namespaced_pod(pods[0].metadata.name, self.ns)

        results = asyncio.run(self.load("ramp", 3, 25.0, at=(5.0, delete_serving_pod)))
        self.figures.requests_during_pod_deletion = len(results)
        lost = [r for r in results if not r[0]]
        if lost:
            raise ScenarioError(f"{len(lost)} of {len(results)} requests lost when a worker Pod was deleted")
        self.running(f"warmserve.io/pool={POOL}", 2)  # the operator made it anew

    def kill_the_leading_operator(self) -> None:
        """Delete the leader's Pod at once: serving goes on, and the standby takes the Lease."""
        holder = self.lease_holder()

        def kill() -> None:
            self.core.delete_namespaced_pod(holder, self.ns, grace_period_seconds=0)

        killed_at = time.monotonic() + 3.0
        results = asyncio.run(self.load("ramp", 2, 20.0, at=(3.0, kill)))
        self.figures.requests_during_operator_kill = len(results)
        if any(not ok for ok, _ in results):
            raise ScenarioError("requests failed while the leading operator was killed")
        new = wait_for(
            "another operator to take the Lease", lambda: (h := self.lease_holder()) != holder and h, WAIT_S
        )
        self.figures.takeover_s = time.monotonic() - killed_at
        if not new:
            raise ScenarioError("no operator holds the Lease")

    def uninstall(self) -> None:
        """The resources first (the operator releases their workers), then the release: nothing is left."""
        for plural, name in ((MODEL_DEPLOYMENTS, "ramp"), (MODEL_DEPLOYMENTS, "cold"), (WORKER_POOLS, POOL)):
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name)
        wait_for("the WorkerPool gone", lambda: not self.listed_custom(WORKER_POOLS), WAIT_S)
        self.t.helm("uninstall", "ws", "--wait", "--timeout", "60s")
        wait_for(
            "no Pod of the release left", lambda: not self.core.list_namespaced_pod(self.ns).items, WAIT_S
        )
        wait_for("no process of the release left", lambda: not self.t.processes_of_namespace(), WAIT_S)

    # -- helpers -----------------------------------------------------------------------------------------
    def create(self, plural: str, obj: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, plural, obj)

    def listed_custom(self, plural: str) -> list[Any]:
        listed: dict[str, Any] = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, plural)
        return list(listed["items"])

    def status(self, name: str) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, MODEL_DEPLOYMENTS, name)
        return dict(obj.get("status") or {})

    def running(self, selector: str, count: int) -> list[kubernetes.client.V1Pod]:
        def live() -> list[kubernetes.client.V1Pod]:
            pods = self.core.list_namespaced_pod(self.ns, label_selector=selector).items
            ready = [
                p
                for p in pods
                if p.status.phase == "Running"
                and not p.metadata.deletion_timestamp
                and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            ]
            return ready if len(ready) == count else []

        return wait_for(f"{count} ready Pods {selector}", live, WAIT_S)

    def gateway(self) -> str:
        return self.t.gateway_url(self.running("app.kubernetes.io/name=warmserve-gateway", 1)[0])

    def lease_holder(self) -> str:
        lease = self.coordination.read_namespaced_lease("warmserve-operator", self.ns)
        return str(lease.spec.holder_identity or "").split("/")[0].split("_")[0]

    @staticmethod
    def listed(client: openai.OpenAI, want: set[str]) -> set[str] | None:
        try:
            names = {m.id for m in client.models.list()}
        except openai.APIError:
            return None
        return names if want <= names else None

    async def load(
        self, model: str, concurrency: int, seconds: float, at: tuple[float, Callable[[], None]] | None = None
    ) -> list[tuple[bool, float]]:
        """``concurrency`` clients sending streamed completions for ``seconds`` (``at``: run a fault at that
        second); each result is (answered in full, its TTFT)."""
        client = openai.AsyncOpenAI(
            base_url=f"{self.gateway()}/v1", api_key="unused", max_retries=0, timeout=60
        )
        end = time.monotonic() + seconds
        results: list[tuple[bool, float]] = []

        async def one_client() -> None:
            while time.monotonic() < end:
                results.append(await self.one(client, model))

        async def fault() -> None:
            if at is not None:
                await asyncio.sleep(at[0])
                await asyncio.to_thread(at[1])

        await asyncio.gather(fault(), *(one_client() for _ in range(concurrency)))
        await client.close()
        return results

    @staticmethod
    async def one(client: openai.AsyncOpenAI, model: str) -> tuple[bool, float]:
        started = time.monotonic()
        first = math.nan
        try:
            stream = await client.completions.create(model=model, prompt="hello", max_tokens=8, stream=True)
            finished = False
            async for chunk in stream:
                if math.isnan(first):
                    first = time.monotonic() - started
                finished = finished or bool(chunk.choices and chunk.choices[0].finish_reason)
            return finished, first
        except openai.APIError:
            return False, first


def summary(figures: Figures) -> str:
    """The figures as the test prints them."""
    ramp = figures.ramp_ttft_s
    median = statistics.median(ramp) if ramp else math.nan
    return (
        f"cold start TTFT {figures.cold_ttft_s:.3f} s; ramp TTFT median {median:.3f} s over {len(ramp)} "
        f"requests (loaded {figures.ready_before_ramp_s:.0f} s before the ramp: {figures.ahead}); "
        f"{figures.requests_during_pod_deletion} requests across a worker Pod deletion, "
        f"{figures.requests_during_operator_kill} across the leader's, Lease taken over in "
        f"{figures.takeover_s:.1f} s"
    )
