"""Issue 14's end-to-end floor: a replayed trace through the gateway of the chart on the local real control
plane, once with the ``warmserve`` policy and once with ``autoscale`` (each in a fresh namespace).

Each run: ``helm install`` of ``charts/warmserve`` (one operator, the gateway; ``operator.policy`` the run's
policy) on the test control plane (``e2e.harness``, docs/test-cluster.md), a WorkerPool of 4 fake-GPU worker
Pods × 2 GPUs of ``--gpu-gib`` each (the fake engine reads weights from ``disk`` at ``--speed`` times the
H100 timing, so a cold start costs seconds), and 8 scale-to-zero ModelDeployments (fake engine). The shipped
ServeGen sample has three models; model ``i`` replays trace model ``i mod 3`` shifted ``i`` × 30 trace
minutes later, so the eight ramps are staggered, with the shapes ``warmserve local`` gives them (13B, 8B,
7B Llamas): all eight cannot serve at their peaks at once, so which replicas to prewarm matters.

**Time.** One 600 s trace window is one ``WINDOW_S`` forecast window of wall time (compression
``600 / WINDOW_S``). The slice replayed is ``--hours`` trace hours from ``--start-hour`` of day
``--day`` (0-based), mean total ``--rps`` requests per second (:mod:`warmserve.local.arrivals`).

**Forecast history.** Each ModelDeployment's ConfigMap ``<name>-forecast-history`` (docs/operator.md,
Forecasts) is seeded before the ModelDeployment exists, from the trace's own earlier days: the wall window
one day (``86400 / WINDOW_S`` windows) before each replayed window holds the concurrency the replay will put
on that model in the trace window a trace day earlier, and the windows just before the history is written
hold the trace's windows just before the slice. Concurrency is Little's law on the replay's rates and each
model's fake request latency (:func:`warmserve.operator.forecast.concurrency.load_series`, as the gateway
would have measured it). The forecaster is ``seasonal-naive-1d``: it predicts each window from the same
window a day before, i.e. the trace's previous day.

**Measured.** Every request's outcome and TTFT (from its scheduled arrival; :func:`warmserve.local.client.
replay`). Every half second, each ModelDeployment's ``status.replicas``. A *rise* of a model is a replayed
window whose expected concurrency (the trace's) needs more instances (``ceil(L / (threshold·B))``, the
reactive rule's count) than any window before it in the slice, the first window included; its replicas
*appeared* when ``serving + prewarmed`` first reached that count; how early they were is the rise's time
minus that (positive: ready ahead). The workers' failed replicas (from their observed annotations) are
printed with their reasons. Floors: every request answered; prewarmed replicas ahead of the ramps (more rises
met ahead than not, with ``warmserve``); the p99 TTFT of both policies printed side by side.

Usage, from the repo root: ``python -m bench.bench_e2e [--quick] [--json]``; the load average is printed
at the start and the end (figures on a shared machine are pessimistic).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import kubernetes
import numpy as np
import openai

from bench.bench_operator import create_namespace, install_crds, list_models, list_pods, percentile, verdict
from bench.bench_operator import load as load_average
from e2e.harness.binaries import cluster_binaries
from e2e.harness.cluster import Cluster, start_cluster
from e2e.harness.waiting import wait_for
from e2e.scenario import CHART, POOL, WAIT_S, Scenario, deployment, example
from e2e.test_scenario import LocalTarget
from warmserve.local.arrivals import ReplaySlice, replay_rates, sample_arrivals
from warmserve.local.client import ClientConfig, Outcome, replay
from warmserve.local.forecasts import request_latency
from warmserve.local.setup import LocalSetup
from warmserve.local.traces import load_rates
from warmserve.operator.forecast.concurrency import SECONDS_PER_DAY, LatencyModels, LoadSeries, load_series
from warmserve.operator.forecast.traces import RateSeries
from warmserve.operator.planning.reactive import ReactiveConfig
from warmserve.protocol.resource_names import GROUP, MODEL_DEPLOYMENTS, VERSION, WORKER_POOLS
from warmserve.protocol.state import OBSERVED_ANNOTATION, ObservedState, ReplicaState
from warmserve.worker.timing import Tier

WINDOW_S = 5  # wall seconds of one forecast window, and of one 600 s trace window
TRACE_WINDOW_S = 600.0
DAY_WINDOWS = int(SECONDS_PER_DAY) // WINDOW_S
TRACE_DAY_WINDOWS = int(SECONDS_PER_DAY / TRACE_WINDOW_S)
MODELS = 8
SHIFT_S = 1800.0  # trace seconds between the ramps of successive models
PODS, GPUS = 4, 2
MAX_CONCURRENCY = 2
HORIZON_S = 15
LEAD_S = 30.0  # wall seconds between the history written and the replay's start
POLICIES = ("warmserve", "autoscale")


@dataclass
class Timeline:
    """``(wall seconds since the replay's start, serving + prewarmed)`` per model, sampled every 0.5 s."""

    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def appeared(self, model: str, count: int) -> float | None:
        """The first time the model had ``count`` replicas ready (serving or prewarmed)."""
        return next((t for t, n in self.samples.get(model, []) if n >= count), None)


@dataclass
class Rise:
    model: str
    at_s: float  # replay seconds of the window whose load needs ``instances``
    instances: int
    lead_s: float | None  # rise minus appearance; None: never appeared


@dataclass
class RunResult:
    policy: str
    outcomes: list[Outcome]
    rises: list[Rise]
    failures: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(o.ok for o in self.outcomes)

    def p99_ttft(self) -> float:
        """Over the answered requests."""
        ttfts = [o.ttft_s for o in self.outcomes if o.ok and o.ttft_s is not None]
        return percentile(ttfts, 0.99) if ttfts else math.nan

    def p99_ttft_sent(self) -> float:
        """Over every request sent, one not answered counting as never (inf): a policy that drops a model's
        requests is not flattered by leaving them out."""
        ttfts = [o.ttft_s if o.ok and o.ttft_s is not None else math.inf for o in self.outcomes]
        return percentile(ttfts, 0.99) if ttfts else math.nan

    def ahead(self) -> list[Rise]:
        return [r for r in self.rises if r.lead_s is not None and r.lead_s > 0]


@dataclass(frozen=True)
class Setup:
    """What both runs share: the models, the replay slice, its arrivals and each model's expected load."""

    local: LocalSetup
    series: tuple[RateSeries, ...]
    replay: ReplaySlice
    loads: dict[str, LoadSeries]

    def first_window(self, load: LoadSeries) -> int:
        """Index in ``load`` of the first replayed trace window (each model's series starts elsewhere)."""
        return round((self.replay.start_sec - load.start_sec) / TRACE_WINDOW_S)


def model_name(i: int) -> str:
    return f"e2e-{i}"


def make_setup(args: argparse.Namespace) -> Setup:
    """The eight models (trace model ``i mod 3`` shifted ``i × SHIFT_S``), the slice, the expected loads."""
    base = sorted(load_rates(None), key=lambda s: s.model)
    trace = [base[i % len(base)] for i in range(MODELS)]
    series = tuple(
        replace(s, model=model_name(i), start_sec=s.start_sec + i * SHIFT_S) for i, s in enumerate(trace)
    )
    local = LocalSetup(
        models=tuple(s.model for s in series),
        workers=PODS,
        gpus=GPUS,
        gpu_memory_gib=args.gpu_gib,
        tier=Tier.DISK,
        speed=args.speed,
        max_concurrency=MAX_CONCURRENCY,
    )
    start = (args.day * 24 + args.start_hour) * 3600.0
    compress = TRACE_WINDOW_S / WINDOW_S
    slice_ = ReplaySlice(start, args.hours * 3600.0, compress, args.rps, seed=args.seed)
    # latency in trace seconds: the replay's rates are per trace second (replay_rates)
    per_model = {m: request_latency(local.latency_s(m) * compress) for m in local.models}
    latency = LatencyModels(per_model=per_model)
    loads = {s.model: s for s in load_series(replay_rates(series, slice_), TRACE_WINDOW_S, latency)}
    return Setup(local, series, slice_, loads)


def history(load: LoadSeries, setup: Setup, replay_window: int, last: int) -> dict[str, Any]:
    """The ConfigMap of a model's seeded history up to wall window ``last`` (module docstring): wall window
    ``k`` near a day before the replay's first window ``replay_window`` holds trace window ``k`` a trace day
    earlier; a recent one, the trace's window as many windows before the slice; null where the trace has
    none."""
    first = replay_window - DAY_WINDOWS - TRACE_DAY_WINDOWS
    values: dict[str, list[float | None]] = {"mean": [], "peak": []}
    for k in range(first, last + 1):
        day_ago = k < replay_window - DAY_WINDOWS // 2
        j = setup.first_window(load) + k - replay_window + (DAY_WINDOWS - TRACE_DAY_WINDOWS if day_ago else 0)
        for key, array in (("mean", load.mean), ("peak", load.peak)):
            value = float(array[j]) if 0 <= j < len(array) else math.nan
            values[key].append(value if math.isfinite(value) else None)
    body = {"windowSeconds": WINDOW_S, "firstWindow": first, **values}
    data = {"history.json": json.dumps(body)}
    return {"metadata": {"name": f"{load.model}-forecast-history"}, "data": data}


def model_manifest(setup: Setup, name: str) -> dict[str, Any]:
    """The scenario's scale-to-zero ModelDeployment with this model's fake shape and the bench's forecast."""
    obj = deployment(name, "seasonal-naive-1d")
    spec, model = obj["spec"], setup.local.spec(name)
    spec["model"] |= {
        "uri": model.weights,
        "weightBytes": model.weight_bytes,
        "kvBytesPerToken": model.kv_bytes_per_token,
        "engineArgs": dict(model.engine_args),
    }
    spec["serving"]["maxConcurrency"] = MAX_CONCURRENCY
    spec["forecast"] |= {"windowSeconds": WINDOW_S, "horizonSeconds": HORIZON_S}
    return obj


def pool_manifest(setup: Setup) -> dict[str, Any]:
    pool = example("workerpool-fake-gpus.yaml")
    pool["spec"] |= {"pods": PODS, "gpusPerPod": GPUS, "poolBytes": f"{setup.local.gpu_memory_gib}Gi"}
    pool["spec"]["fake"] |= {"tier": str(setup.local.tier), "speed": setup.local.speed}
    pool["spec"]["template"] = {"resources": {"requests": {"cpu": "10m", "memory": "64Mi"}}}
    return pool


def rises(setup: Setup, timeline: Timeline) -> list[Rise]:
    """Every rise of every model in the slice (module docstring) and how far ahead its replicas were."""
    threshold = ReactiveConfig().scale_out_threshold
    windows = round(setup.replay.span_sec / TRACE_WINDOW_S)
    out = []
    for model, load in setup.loads.items():
        highest = 0
        for i in range(windows):
            mean = float(load.mean[setup.first_window(load) + i])
            need = math.ceil(mean / (threshold * MAX_CONCURRENCY)) if math.isfinite(mean) else 0
            if need > highest:
                highest = need
                at = i * WINDOW_S
                seen = timeline.appeared(model, need)
                out.append(Rise(model, at, need, None if seen is None else at - seen))
    return out


class Watcher:
    """Samples every ModelDeployment's ready replicas every half second, in a thread, until stopped."""

    def __init__(self, api: kubernetes.client.ApiClient, ns: str, zero: float) -> None:
        self.api, self.ns, self.zero = api, ns, zero
        self.timeline = Timeline()
        self.failures: set[str] = set()  # failed replicas the workers reported, with their reasons
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(0.5):
            now = time.time() - self.zero
            for md in list_models(self.api, self.ns):
                replicas = (md.get("status") or {}).get("replicas") or {}
                ready = replicas.get("serving", 0) + replicas.get("prewarmed", 0)
                self.timeline.samples.setdefault(md["metadata"]["name"], []).append((now, ready))
            for pod in list_pods(self.api, self.ns, label_selector=f"warmserve.io/pool={POOL}"):
                report = (pod["metadata"].get("annotations") or {}).get(OBSERVED_ANNOTATION)
                for replica in ObservedState.from_json(report).replicas if report else ():
                    if replica.state is ReplicaState.FAILED:
                        self.failures.add(f"{replica.id}: {replica.reason}")

    def stop(self) -> Timeline:
        self.stopping.set()
        self.thread.join()
        return self.timeline


def run_policy(cluster: Cluster, setup: Setup, policy: str, home: Path, logs: Path | None) -> RunResult:
    """Install, seed, replay and uninstall in a namespace of its own (module docstring); with ``logs``, the
    operator's, gateway's and workers' logs are copied there before the uninstall."""
    ns = f"e2e-{policy}"
    with cluster.api_client() as api:
        create_namespace(api, ns)
    target = LocalTarget(cluster, ns, cluster_binaries().helm / "helm", home)
    values = ["--set", f"operator.policy={policy}", "--set-json", "operator.tick=0.5"]
    values += ["--set-json", "operator.statusInterval=1"]
    scenario = Scenario(target, values)
    target.helm("install", "ws", str(CHART), *values)
    scenario.running("app.kubernetes.io/name=warmserve-operator", 1)
    scenario.running("app.kubernetes.io/name=warmserve-gateway", 1)
    replay_window = math.ceil((time.time() + LEAD_S) / WINDOW_S)
    zero = replay_window * WINDOW_S  # wall time of the replay's start
    for load in setup.loads.values():
        cm = history(load, setup, replay_window, math.floor(time.time() / WINDOW_S) - 1)
        scenario.core.create_namespaced_config_map(ns, cm)  # type: ignore[arg-type]
    scenario.create(WORKER_POOLS, pool_manifest(setup))
    for name in setup.local.models:
        scenario.create(MODEL_DEPLOYMENTS, model_manifest(setup, name))
    scenario.running(f"warmserve.io/pool={POOL}", PODS)
    gateway = scenario.gateway()
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=10)
    wait_for(
        "the gateway to list every model", lambda: scenario.listed(client, set(setup.local.models)), WAIT_S
    )
    watcher = Watcher(target.api, ns, zero)
    arrivals = sample_arrivals(setup.series, setup.replay)
    start = time.monotonic() + (zero - time.time())
    if start < time.monotonic():
        raise RuntimeError(f"set-up took longer than the {LEAD_S:.0f} s lead: the replay would start late")
    config = ClientConfig(max_tokens=setup.local.max_tokens, timeout_s=60.0)
    outcomes = asyncio.run(replay(gateway, arrivals, config, start=start))
    timeline = watcher.stop()
    result = RunResult(policy, outcomes, rises(setup, timeline), sorted(watcher.failures))
    if logs is not None:
        for pod in (cluster.workdir / "pods").glob(f"{ns}_*"):
            shutil.copytree(pod, logs / pod.name, ignore=shutil.ignore_patterns("kubeconfig"))
    teardown(scenario, target)
    target.api.close()  # type: ignore[no-untyped-call]
    return result


def teardown(scenario: Scenario, target: LocalTarget) -> None:
    """The pool first (the operator releases its workers), then the release, then the namespace."""
    scenario.custom.delete_collection_namespaced_custom_object(
        GROUP, VERSION, target.namespace, MODEL_DEPLOYMENTS
    )
    scenario.custom.delete_namespaced_custom_object(GROUP, VERSION, target.namespace, WORKER_POOLS, POOL)
    wait_for("the WorkerPool gone", lambda: not scenario.listed_custom(WORKER_POOLS), WAIT_S)
    target.helm("uninstall", "ws", "--wait", "--timeout", "60s")
    wait_for("no Pod left", lambda: not scenario.core.list_namespaced_pod(target.namespace).items, WAIT_S)
    scenario.core.delete_namespace(target.namespace)


def report(results: Sequence[RunResult], setup: Setup, as_json: bool) -> None:
    """Each figure beside its floor (module docstring)."""
    out: dict[str, Any] = {"hours": setup.replay.span_sec / 3600, "rps": setup.replay.rps}
    for r in results:
        sent, leads = len(r.outcomes), [x.lead_s for x in r.rises if x.lead_s is not None]
        ahead = r.ahead()
        print(
            f"{r.policy}: answered {r.answered}/{sent} (floor all: {verdict(r.answered == sent)}); "
            f"p99 TTFT {r.p99_ttft():.3f} s answered, {r.p99_ttft_sent():.3f} s sent; "
            f"rises with replicas ready ahead {len(ahead)}/{len(r.rises)}, "
            f"median lead {np.median(leads) if leads else math.nan:.1f} s"
        )
        for model in setup.local.models:
            mine = RunResult(r.policy, [o for o in r.outcomes if o.model == model], [])
            lead = [x.lead_s for x in r.rises if x.model == model]
            print(
                f"  {model} ({setup.local.shape_name(model)}): answered {mine.answered}/"
                f"{len(mine.outcomes)}, p99 TTFT {mine.p99_ttft():.3f} s, leads {lead}"
            )
        for failure in r.failures[:5]:
            print(f"  failed replica {failure[:200]}")
        errors = sorted({o.error[:120] for o in r.outcomes if not o.ok})
        for error in errors[:5]:
            print(f"  error: {error}")
        out[r.policy] = {
            "sent": sent,
            "answered": r.answered,
            "p99_ttft_s": r.p99_ttft(),
            "p99_ttft_sent_s": r.p99_ttft_sent() if math.isfinite(r.p99_ttft_sent()) else None,
            "rises": len(r.rises),
            "ahead": len(ahead),
            "median_lead_s": float(np.median(leads)) if leads else None,
        }
    warm = next(r for r in results if r.policy == "warmserve")
    met = 2 * len(warm.ahead()) > len(warm.rises)
    print(f"prewarmed ahead of the ramps with warmserve: {verdict(met)}")
    print(
        "p99 TTFT: "
        + ", ".join(f"{r.policy} {r.p99_ttft():.3f} s ({r.p99_ttft_sent():.3f} s sent)" for r in results)
        + " (answered requests; in brackets every request sent, one unanswered counting as inf)"
    )
    print(f"load average at end: {load_average()}")
    if as_json:
        print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day", type=int, default=7, help="trace day, 0-based (default %(default)s)")
    parser.add_argument("--start-hour", type=float, default=7.0, help="trace hour the slice starts at")
    parser.add_argument("--hours", type=float, default=4.0, help="trace hours replayed (default %(default)s)")
    parser.add_argument("--rps", type=float, default=16.0, help="mean total req/s (default %(default)s)")
    parser.add_argument("--speed", type=float, default=2.0, help="fake engine's time factor (default 2)")
    parser.add_argument("--gpu-gib", type=int, default=40, help="GiB of each fake GPU (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrivals")
    parser.add_argument("--logs", type=Path, default=None, help="copy the Pods' logs into this directory")
    parser.add_argument("--quick", action="store_true", help="one trace hour (a smoke test)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    if args.quick:
        args.hours = 1.0
    setup = make_setup(args)
    print(f"load average at start: {load_average()} ({os.cpu_count()} CPUs)", flush=True)
    print(
        f"{MODELS} models on {PODS} Pods x {GPUS} fake GPUs of {args.gpu_gib} GiB; trace day {args.day} "
        f"from {args.start_hour:g} h for {args.hours:g} h in {setup.replay.duration_s:.0f} s, "
        f"{args.rps:g} req/s",
        flush=True,
    )
    cluster = start_cluster(nodes=2, gpus_per_node=0)
    try:
        install_crds(cluster)
        with tempfile.TemporaryDirectory() as home:
            results = [run_policy(cluster, setup, p, Path(home), args.logs) for p in POLICIES]
    finally:
        cluster.stop()
    report(results, setup, args.json)


if __name__ == "__main__":
    main()
