"""Discovery: serving replicas become instances; a worker that fails leaves the table at once."""

from __future__ import annotations

import aiohttp

from tests.gateway.conftest import start_worker
from warmserve.gateway.discovery import Discovery, InstanceTable, instance_table, serving_instances
from warmserve.gateway.instances import Instance
from warmserve.protocol.state import GpuUsage, ObservedReplica, ObservedState, ReplicaState


def _replica(
    rid: str, model: str, state: ReplicaState, endpoint: str = "", inflight: int = 0
) -> ObservedReplica:
    return ObservedReplica(rid, model, (0,), state, since=1.0, inflight=inflight, endpoint=endpoint)


def _state(*replicas: ObservedReplica) -> ObservedState:
    return ObservedState("w", 3, True, (GpuUsage(0, 1 << 30, 0),), replicas)


def test_only_serving_replicas_become_instances() -> None:
    state = _state(
        _replica("r1", "m", ReplicaState.SERVING, "http://10.0.0.1:9000/", inflight=3),
        _replica("r2", "m", ReplicaState.PREWARMED),
        _replica("r3", "m", ReplicaState.LOADING),
        _replica("r4", "m", ReplicaState.DRAINING, "http://10.0.0.1:9000"),
        _replica("r5", "n", ReplicaState.SERVING),
    )
    assert serving_instances(state, "http://w:8000") == (
        Instance("http://w:8000", "r1", "m", "http://10.0.0.1:9000", 3, serving_since=1.0),
        Instance("http://w:8000", "r5", "n", "http://w:8000", 0, serving_since=1.0),
    )


def test_the_table_groups_by_model_in_a_stable_order() -> None:
    a1 = Instance("http://a", "1", "m", "http://a")
    b1 = Instance("http://b", "1", "m", "http://b")
    a2 = Instance("http://a", "2", "n", "http://a")
    table = instance_table({"http://b": (b1,), "http://a": (a2, a1)})
    assert table == {"m": (a1, b1), "n": (a2,)}
    assert instance_table({}) == {}


async def test_a_worker_that_stops_answering_loses_its_instances_at_the_next_poll() -> None:
    worker = await start_worker("w", gpus=1)
    try:
        await worker.serve({"r1": "m"}, {"m": 2})
        tables: list[InstanceTable] = []
        async with aiohttp.ClientSession() as session:
            discovery = Discovery(session, [worker.url], tables.append)
            await discovery.poll_once()
            await discovery.poll_once()  # unchanged: not published again
            await worker.stop()
            await discovery.poll_once()
        assert [list(t) for t in tables] == [["m"], []]
        assert tables[0]["m"][0].replica == "r1" and tables[0]["m"][0].endpoint == worker.url
    finally:
        await worker.stop()
