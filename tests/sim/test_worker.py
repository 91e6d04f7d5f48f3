"""The simulated worker follows the real runtime's convergence rules."""

from __future__ import annotations

from warmserve.protocol.state import DesiredReplica, DesiredState, ModelSpec, ReplicaState, Role
from warmserve.sim.batch_cost import Costing
from warmserve.sim.instance import SimInstance
from warmserve.sim.worker import SimWorker
from warmserve.worker.timing import GPU_PROFILES, shape_for_spec

SPEC = ModelSpec(
    "m", "/cache/llama2-7b", 13 << 30, kv_bytes_per_token=1 << 19, engine_args={"shape": "llama2-7b"}
)


def worker(timers: list[tuple[float, str, int]]) -> SimWorker:
    profile = GPU_PROFILES["h100"]

    def make_instance(spec: ModelSpec, kv_bytes: int) -> SimInstance:
        costing = Costing(shape_for_spec(spec), profile, spec.tensor_parallel)
        return SimInstance(costing, spec.max_concurrency, kv_bytes, spec.kv_bytes_per_token, [], [])

    return SimWorker(
        "w0",
        1,
        profile,
        0,
        True,
        make_instance,
        lambda at, _w, rid, version: timers.append((at, rid, version)),
        lambda _at, _w, _rid, _version: None,  # no requests here: segments never move
    )


def desired(generation: int, role: Role) -> DesiredState:
    return DesiredState("w0", generation, {"m": SPEC}, (DesiredReplica("r", "m", (0,), role),))


def test_an_idle_serving_replica_asked_to_prewarm_is_demoted_at_once() -> None:
    timers: list[tuple[float, str, int]] = []
    w = worker(timers)
    w.apply(desired(1, Role.SERVE), 0.0)  # cold start: load, then promote
    while timers:
        at, rid, version = timers.pop(0)
        w.fire(rid, version, at)
    assert w.replicas["r"].state is ReplicaState.SERVING
    w.apply(desired(2, Role.PREWARM), 100.0)
    assert w.replicas["r"].state is ReplicaState.PREWARMED  # nothing in flight: no drain to wait for
    w.apply(DesiredState("w0", 3, {}, ()), 101.0)
    assert "r" not in w.replicas
