"""The discrete-event simulator: one policy, one workload, one cluster, in virtual time.

Events sit in one heap ordered by (time, sequence number), so a run is deterministic for a workload
(itself deterministic for its seed). Arrivals are read in order from the workload's sorted arrays;
the heap holds scheduler ticks, worker timers (loads, promotions) and instance segment ends.

The gateway is modelled as the real one routes: a request goes to the least-loaded serving instance
of its model with fewer than B in flight, else it is held in the model's FIFO queue; a request held
longer than ``hold_timeout_s`` is dropped (the real gateway answers 503). Requests still unfinished
``grace_s`` after the replay ends count as dropped too. The real gateway learns of a new serving
replica only at its next discovery poll (every ``discovery_poll_s``, the gateway's own default): a
replica that starts serving becomes routable at the next poll. The polls are not synchronised with the
scheduler's ticks (both loops also spend time on their own I/O), so they are placed half an interval
after the ticks: a promotion ordered at a tick is seen half a poll later, the mean over a random phase.
``request_overhead_s`` is the serving path's own cost (client, gateway and worker HTTP, event loops), a
measured constant added to every first token; 0 models the engine alone.

The **real scheduler** (:class:`Scheduler`, with the policy's own function and state) runs every
``tick_s`` of virtual time on :class:`ObservedState` reports built from the simulated workers, and its
desired states go to :class:`SimWorker` objects that converge with the worker's own rules. A tick whose
inputs (demand per model, every worker's replica states, the forecast window) are the same as at each
of the last ``settle_ticks`` ticks is skipped unless ``heartbeat_s`` passed since the last one run: with
identical inputs and a settled smoothing window the planner decides nothing new, and the heartbeat
bounds the delay of time-driven decisions (protection expiry, keep-alive). ``muxserve`` runs no
scheduler: its static layout is resident from the start.

Every model's timeline (load, forecast mean and peak, prewarmed and serving replicas) is sampled at the
scheduler's ticks, one sample per ``timeline_every_s`` at most and ``timeline_points`` per run at most.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from warmserve.gateway.config import GatewayConfig
from warmserve.operator.forecast.concurrency import LatencyModel
from warmserve.operator.forecast.forecasters import make_forecaster
from warmserve.operator.forecast.traces import FloatArray
from warmserve.operator.planning.snapshot import Demand, Gpu, ModelConfig, Worker
from warmserve.operator.policies.muxserve import muxserve_layout, on_unit
from warmserve.operator.policies.registry import ForecastNeed, Sizing, policy_by_name
from warmserve.operator.ports import NoForecast, Observation
from warmserve.operator.scheduler import Scheduler
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import ModelSpec, ReplicaState
from warmserve.replay.forecasts import ForecastMode, TraceForecast
from warmserve.sim.batch_cost import Costing
from warmserve.sim.catalog import ClusterSpec
from warmserve.sim.instance import SimInstance
from warmserve.sim.worker import SimReplica, SimWorker
from warmserve.sim.workload import Workload
from warmserve.worker.timing import decode_step_seconds, prefill_seconds, shape_for_spec

_TICK, _TIMER, _SEGMENT, _DISCOVERY = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Constants of a run (see the module docstring)."""

    tick_s: float = 0.5
    settle_ticks: int = 6
    heartbeat_s: float = 2.5
    hold_timeout_s: float = 120.0
    horizon_s: float = 120.0
    grace_s: float = 600.0
    timeline_every_s: float = 60.0  # the timeline's sampling interval, widened to keep <= timeline_points
    timeline_points: int = 1440  # at most this many timeline samples per model (bounded memory)
    discovery_poll_s: float = GatewayConfig(models=()).poll_interval_s
    request_overhead_s: float = 0.0
    per_replica_engines: bool | None = None  # cold starts pay an engine start; None: as the policy does
    online_forecast: ForecastMode = ForecastMode.ONE_STEP  # how an online policy's forecasts are made
    forecaster: str = "warmserve"  # the online policy's forecaster, a name from forecasters.FORECASTERS

    def __post_init__(self) -> None:
        make_forecaster(self.forecaster, 1)  # InvalidFieldError listing the names
        for name in ("discovery_poll_s", "request_overhead_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidFieldError(name, "a finite number of seconds >= 0", value)
        if self.timeline_points < 2:
            raise InvalidFieldError("timeline_points", "an integer >= 2", self.timeline_points)


@dataclass(frozen=True)
class RunResult:
    """What one policy's run produced: per-request times (NaN = never), counters and each model's timeline.

    ``timeline`` maps every model to an array of rows (t, load, forecast mean, forecast peak, prewarmed
    replicas, serving replicas), one row per sample (see :class:`Simulation`); empty without a scheduler.
    """

    policy: str
    arrival: FloatArray
    first_token: FloatArray
    finish: FloatArray
    output: np.ndarray
    slo: FloatArray
    cold_starts: int
    prewarm_hits: int
    gpu_busy_s: float
    model: npt.NDArray[np.intp]  # each request's index into ``models``
    models: tuple[str, ...]
    timeline: Mapping[str, FloatArray]
    ticks_run: int = 0
    held_ticks: int = 0  # ticks at which the scheduler refused its snapshot and held steady
    excluded_ticks: int = 0  # ticks at which it planned without a worker whose report it refused
    measured_from_s: float = 0.0  # requests arriving earlier are the warm-up's: served, not measured
    gpu_held_s: float = (
        0.0  # GPU-seconds with a replica on them (loading, prewarmed or serving) in the replay
    )

    def measured(self) -> npt.NDArray[np.bool_]:
        """Which requests the figures count: those that arrived after the warm-up."""
        return np.asarray(self.arrival >= self.measured_from_s)


def latency_models(
    models: Mapping[str, ModelConfig], cluster: ClusterSpec, workload: Workload
) -> dict[str, LatencyModel]:
    """Each model's service time per token from the timing model (prefill alone; decode in a half-full
    batch), with the workload's mean lengths: the concurrency scale forecasts and sizing use."""
    mean_in, mean_out = float(np.mean(workload.prompt)), float(np.mean(workload.output))
    out = {}
    for name, m in models.items():
        shape, tp, b = shape_for_spec(m.spec), m.spec.tensor_parallel, m.spec.max_concurrency
        batch = max(b // 2, 1)
        prefill = prefill_seconds(shape, cluster.gpu, tp, max(round(mean_in), 1)) / max(mean_in, 1.0)
        context = batch * max(round(mean_in + mean_out / 2), 1)
        decode = decode_step_seconds(shape, cluster.gpu, tp, batch, context)
        out[name] = LatencyModel(prefill, decode, mean_in, mean_out)
    return out


def trace_forecast(
    workload: Workload,
    latency: Mapping[str, LatencyModel],
    mode: ForecastMode,
    horizon_s: float,
    forecaster: str = "warmserve",
) -> TraceForecast:
    """The replay library's forecast source over ``workload``'s rate history (a per-request log's binned
    arrivals, a rate trace's series), predicted by the forecaster called ``forecaster``."""
    return TraceForecast(
        workload.history,
        workload.replay_start_s,
        workload.time_scale,
        workload.duration_s,
        latency,
        horizon_s,
        mode,
        forecaster,
    )


def sizing(forecast: TraceForecast, workload: Workload, latency: Mapping[str, LatencyModel]) -> Sizing:
    """Mean and peak concurrency per model over the replay: the oracle's table, from the same rate history
    the forecasts read (a rate trace's or a per-request log's). A model the table lacks (a workload built
    without history) gets the mean from its request count and the peak taken as twice the mean."""
    mean, peak = {}, {}
    for i, name in enumerate(workload.models):
        if name in forecast.table:
            m, p = forecast.table[name]
            mean[name], peak[name] = float(np.nanmean(m)), float(np.nanmax(p))
        else:
            count = int(np.sum(workload.model == i))
            mean[name] = count * latency[name].mean_latency_sec / workload.duration_s
            peak[name] = 2 * mean[name]
    return Sizing(mean, peak)


class Simulation:
    """One run; :meth:`run` returns its :class:`RunResult`."""

    def __init__(
        self,
        workload: Workload,
        cluster: ClusterSpec,
        models: Mapping[str, ModelConfig],
        policy: str,
        config: SimConfig = SimConfig(),
        progress: Callable[[float], None] | None = None,
    ) -> None:
        self.workload, self.cluster, self.models, self.config = workload, cluster, models, config
        self.progress = progress
        self.names = list(workload.models)
        self.prompts = workload.prompt.tolist()
        self.outputs = workload.output.tolist()
        self.arrivals = workload.arrival.tolist()
        self.model_of = workload.model.tolist()
        n = len(self.arrivals)
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.heap: list[tuple[float, int, int, str, str, int]] = []
        self.seq = 0
        self.queues: dict[str, deque[int]] = {m: deque() for m in self.names}
        self.inflight = dict.fromkeys(self.names, 0)
        self.ready: dict[str, list[SimReplica]] = {m: [] for m in self.names}
        self.instances: list[SimInstance] = []
        self.static: dict[tuple[str, str], SimReplica] = {}
        latency = latency_models(models, cluster, workload)
        oracle = trace_forecast(workload, latency, ForecastMode.ORACLE, config.horizon_s)
        self.sizing = sizing(oracle, workload, latency)
        self.entry = entry = policy_by_name(policy, self.sizing)
        self.forecast = {
            ForecastNeed.NONE: None,
            ForecastNeed.ORACLE: oracle,
            ForecastNeed.ONLINE: trace_forecast(
                workload, latency, config.online_forecast, config.horizon_s, config.forecaster
            ),
        }[entry.forecast]
        per_replica = config.per_replica_engines
        if per_replica is None:
            per_replica = entry.engine_per_replica
        universal = not per_replica
        host_cache = int(cluster.host_cache_gib * (1 << 30))
        self.workers = {
            f"node-{i}": SimWorker(
                f"node-{i}",
                cluster.gpus_per_node,
                cluster.gpu,
                host_cache,
                universal,
                self._instance,
                self._timer,
                self._segment_ends,
            )
            for i in range(cluster.nodes)
        }
        self.scheduler = None
        if entry.policy is not None:
            self.scheduler = Scheduler(
                models, entry.policy, entry.initial_state, self.forecast or NoForecast(), entry.scores
            )
        self.timeline: list[FloatArray] = []  # one (models, 6) array per sample
        horizon = workload.duration_s + config.grace_s
        self._timeline_every = max(config.timeline_every_s, horizon / max(config.timeline_points - 1, 1))
        self.ticks_run = 0
        self.held_ticks = 0
        self.excluded_ticks = 0
        self._owner: dict[str, str] = {}  # serving replica id -> its worker
        self._polls_due: set[float] = set()  # discovery polls scheduled, by time
        self._last_signature: object = None
        self._same = 0
        self._last_run = -math.inf
        self._next_timeline = 0.0
        self.gpu_held_s = 0.0
        self._gpus_held = 0  # GPUs with a replica on them since _held_since
        self._held_since = 0.0
        self._held_epoch = -1

    # --- plumbing -------------------------------------------------------------------------------

    def _push(self, at: float, kind: int, worker: str, rid: str, version: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, kind, worker, rid, version))

    def _timer(self, at: float, worker: str, rid: str, version: int) -> None:
        self._push(at, _TIMER, worker, rid, version)

    def _segment_ends(self, at: float, worker: str, rid: str, version: int) -> None:
        self._push(at, _SEGMENT, worker, rid, version)

    def _instance(self, spec: ModelSpec, kv_bytes: int, slowdown: float = 1.0) -> SimInstance:
        costing = Costing(shape_for_spec(spec), self.cluster.gpu, spec.tensor_parallel, slowdown)
        inst = SimInstance(
            costing, spec.max_concurrency, kv_bytes, spec.kv_bytes_per_token, self.prompts, self.outputs
        )
        self.instances.append(inst)
        return inst

    def _replica(self, worker: str, rid: str) -> SimReplica | None:
        w = self.workers.get(worker)
        return w.replicas.get(rid) if w is not None and rid in w.replicas else self.static.get((worker, rid))

    def _seen_at(self, since: float) -> float:
        """When the gateway's first discovery poll after ``since`` runs (polls at (k + 1/2)·interval)."""
        poll = self.config.discovery_poll_s
        if poll <= 0:
            return since
        return (math.ceil(since / poll - 0.5) + 0.5) * poll

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> RunResult:
        if self.entry.colocated:
            self._place_static()
            self._account(0.0)
        else:
            self._push(0.0, _TICK, "", "", 0)
        end = self.workload.duration_s + self.config.grace_s
        i, n = 0, len(self.arrivals)
        next_progress = 0.0
        while True:
            t_arr = self.arrivals[i] if i < n else math.inf
            t_evt = self.heap[0][0] if self.heap else math.inf
            now = min(t_arr, t_evt)
            if now > end or now == math.inf or (i >= n and self._idle()):
                break
            if self.progress is not None and now >= next_progress:
                self.progress(min(now, self.workload.duration_s))
                next_progress = now + 600.0
            if t_arr <= t_evt:
                self._route(self.names[self.model_of[i]], i, now)
                i += 1
                continue
            _, _, kind, worker, rid, version = heapq.heappop(self.heap)
            if kind == _TICK:
                self._tick(now)
            elif kind == _TIMER:
                self.workers[worker].fire(rid, version, now)
                self._after_worker_change(now)
            elif kind == _DISCOVERY:
                self._discover(now)
            else:
                self._segment(worker, rid, version, now)
        if self.progress is not None:  # the whole replay is done, whenever its last event fell
            self.progress(self.workload.duration_s)
        return self._result()

    def _idle(self) -> bool:
        return all(v == 0 for v in self.inflight.values()) and all(not q for q in self.queues.values())

    def _route(self, model: str, rid: int, now: float) -> None:
        if not self._send(model, rid, now):
            self.queues[model].append(rid)

    def _send(self, model: str, rid: int, now: float) -> bool:
        best: SimReplica | None = None
        least = math.inf
        for replica in self.ready[model]:
            load = replica.instance.inflight if replica.instance is not None else math.inf
            if load < least and replica.instance is not None and load < replica.instance.max_batch:
                best, least = replica, load
        if best is None or best.instance is None:
            return False
        inst = best.instance
        version = inst.version
        if not inst.enqueue(rid, now):
            return True  # refused: it can never fit; it stays without a first token (dropped)
        self.inflight[model] += 1
        if inst.version != version and inst.seg_end < math.inf:
            self._push(inst.seg_end, _SEGMENT, self._owner[best.id], best.id, inst.version)
        return True

    def _segment(self, worker: str, rid: str, version: int, now: float) -> None:
        replica = self._replica(worker, rid)
        if replica is None or replica.instance is None or replica.instance.version != version:
            return
        inst = replica.instance
        first, finished = inst.complete(now)
        for r in first:
            self.first_token[r] = now + self.config.request_overhead_s
        model = replica.spec.name
        for r in finished:
            self.finish[r] = now
        self.inflight[model] -= len(finished)
        if inst.seg_end < math.inf:
            self._push(inst.seg_end, _SEGMENT, worker, rid, inst.version)
        queue = self.queues[model]
        while queue and self._send(model, queue[0], now):
            queue.popleft()
        if replica.state is ReplicaState.DRAINING and inst.inflight == 0 and worker in self.workers:
            self.workers[worker].reconcile(now)
            self._after_worker_change(now)

    def _account(self, now: float) -> None:
        """Add the GPU-seconds held since the last change (up to the replay's end), then count the GPUs
        held from ``now`` if a replica changed: a GPU counts once whatever shares it (a borrowed load)."""
        until = min(now, self.workload.duration_s)
        self.gpu_held_s += self._gpus_held * max(until - self._held_since, 0.0)
        self._held_since = max(until, self._held_since)
        epoch = sum(w.epoch for w in self.workers.values())
        if epoch != self._held_epoch:
            self._held_epoch = epoch
            self._gpus_held = sum(
                len({(name, g) for r in w.replicas.values() for g in r.gpus})
                for name, w in self.workers.items()
            ) + len({(w, g) for (w, _), r in self.static.items() for g in r.gpus})

    def _after_worker_change(self, now: float) -> None:
        self._account(now)
        if any(w.changed for w in self.workers.values()):
            self._discover(now)

    def _discover(self, now: float) -> None:
        """Rebuild the gateway's instance table: serving replicas its polls have seen by ``now``."""
        for m in self.names:
            self.ready[m] = []
        for name, w in self.workers.items():
            w.changed = False
            for replica in w.serving():
                self._owner[replica.id] = name
                seen = self._seen_at(replica.since)
                if seen > now:
                    if seen not in self._polls_due:
                        self._polls_due.add(seen)
                        self._push(seen, _DISCOVERY, "", "", 0)
                    continue
                self.ready[replica.spec.name].append(replica)
        self._polls_due.discard(now)
        for model, queue in self.queues.items():
            while queue and self._send(model, queue[0], now):
                queue.popleft()

    def _tick(self, now: float) -> None:
        cfg = self.config
        self._drop_expired(now)
        if now < self.workload.duration_s + cfg.grace_s:
            self._push(now + cfg.tick_s, _TICK, "", "", 0)
        assert self.scheduler is not None
        demand = {m: Demand(float(self.inflight[m]), len(self.queues[m])) for m in self.names}
        window = (
            self.forecast.window(now)
            if isinstance(self.forecast, TraceForecast) and self.forecast.table
            else 0
        )
        signature = (
            tuple((d.inflight, d.queued) for d in demand.values()),
            tuple(w.epoch for w in self.workers.values()),
            window,
        )
        if signature == self._last_signature:
            self._same += 1
        else:
            self._same = 0
        self._last_signature = signature
        if self._same > cfg.settle_ticks and now - self._last_run < cfg.heartbeat_s:
            return
        self._last_run = now
        self.ticks_run += 1
        observation = Observation(now, {n: w.observed(now) for n, w in self.workers.items()}, demand)
        decision = self.scheduler.tick(observation)
        self.held_ticks += bool(self.scheduler.last_error)
        self.excluded_ticks += bool(self.scheduler.excluded)
        for name, desired in decision.desired.items():
            self.workers[name].apply(desired, now)
        self._after_worker_change(now)
        if now >= self._next_timeline:
            self._record(now, demand)
            self._next_timeline = now + self._timeline_every

    def _record(self, now: float, demand: Mapping[str, Demand]) -> None:
        """One timeline sample of every model, at the first scheduler tick ``_timeline_every`` after the
        last: every ``timeline_every_s``, or further apart so that the run (replay and grace) holds at most
        ``timeline_points`` samples, whatever its length (memory: models x points x 6 floats)."""
        forecasts = self.forecast.forecasts(now) if self.forecast is not None else {}
        row = np.zeros((len(self.names), 6))
        row[:, 0] = now
        index = {m: i for i, m in enumerate(self.names)}
        for i, m in enumerate(self.names):
            f = forecasts.get(m)
            row[i, 1:4] = (demand[m].total, *((f.mean, f.peak) if f is not None else (math.nan, math.nan)))
        for w in self.workers.values():
            for r in w.replicas.values():
                i = index[r.spec.name]
                row[i, 4] += r.state is ReplicaState.PREWARMED
                row[i, 5] += r.instance is not None
        self.timeline.append(row)

    def _drop_expired(self, now: float) -> None:
        limit = now - self.config.hold_timeout_s
        for queue in self.queues.values():
            while queue and self.arrivals[queue[0]] < limit:
                queue.popleft()  # the gateway gave up on it: no first token, dropped

    def _place_static(self) -> None:
        workers = tuple(
            Worker(n, tuple(Gpu(g, self.cluster.gpu.memory_bytes) for g in range(self.cluster.gpus_per_node)))
            for n in self.workers
        )
        for unit in muxserve_layout(self.models, workers, self.sizing.mean):
            for model in unit.models:
                spec = on_unit(self.models[model].spec, len(unit.gpus))
                share = unit.compute_share[model]
                inst = self._instance(spec, unit.kv_quota_bytes[model] * spec.tensor_parallel, 1.0 / share)
                rid = f"{model}@{unit.worker}:{'-'.join(map(str, unit.gpus))}"
                replica = SimReplica(rid, spec, unit.gpus, ReplicaState.SERVING, 0.0, instance=inst)
                self.static[(unit.worker, rid)] = replica
                self._owner[rid] = unit.worker
                self.ready[model].append(replica)

    def _timelines(self) -> dict[str, FloatArray]:
        """The samples as one (samples, 6) array per model (no rows for a run without a scheduler)."""
        rows = np.stack(self.timeline) if self.timeline else np.zeros((0, len(self.names), 6))
        return {m: rows[:, i, :] for i, m in enumerate(self.names)}

    def _result(self) -> RunResult:
        self._account(self.workload.duration_s)
        busy = sum(inst.busy_s * inst.costing.tp / inst.costing.slowdown for inst in self.instances)
        slo = np.array([self.models[m].slo_ttft_s for m in self.names])[self.workload.model]
        return RunResult(
            policy=self.entry.name,
            arrival=self.workload.arrival,
            first_token=self.first_token,
            finish=self.finish,
            output=self.workload.output,
            slo=slo,
            cold_starts=sum(w.cold_starts for w in self.workers.values()),
            prewarm_hits=sum(w.prewarm_hits for w in self.workers.values()),
            gpu_busy_s=busy,
            model=self.workload.model,
            models=tuple(self.names),
            timeline=self._timelines(),
            ticks_run=self.ticks_run,
            held_ticks=self.held_ticks,
            excluded_ticks=self.excluded_ticks,
            measured_from_s=self.workload.measured_from_s,
            gpu_held_s=self.gpu_held_s,
        )
