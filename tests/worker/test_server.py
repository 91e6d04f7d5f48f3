"""The worker's HTTP server over a real runtime: fake-GPU pools and the fake engine at zero delays."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.promtool import assert_promtool_passes, needs_promtool
from warmserve.protocol.state import ObservedState, ReplicaState
from warmserve.worker.engines.fake import FakeEngine
from warmserve.worker.runtime import WorkerConfig, WorkerRuntime
from warmserve.worker.server import REPLICA_HEADER, create_app, desired_feed
from warmserve.worker.timing import gpu_profile

GIB = 2**30
JSON = {"Content-Type": "application/json"}
MODEL = {
    "weights": "/cache/llama3-8b",
    "weight_bytes": 16 * GIB,
    "max_concurrency": 4,
    "engine_args": {"shape": "llama3-8b"},
}


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    config = WorkerConfig(name="w0", gpus=2, gpu_memory_bytes=80 * GIB, endpoint="http://w0")
    runtime = WorkerRuntime(config, FakeEngine(gpu_profile("h100"), speed=0.0))
    async with TestClient(TestServer(create_app(runtime))) as c:
        yield c


def desired(generation: int, *replicas: dict[str, Any], models: dict[str, Any] | None = None) -> str:
    doc = {
        "worker": "w0",
        "generation": generation,
        "models": models or {"llama": MODEL},
        "replicas": list(replicas),
    }
    return json.dumps(doc)


async def state(client: TestClient[Any, Any]) -> ObservedState:
    resp = await client.get("/state")
    return ObservedState.from_json(await resp.text())


async def wait_for(client: TestClient[Any, Any], check: Callable[[ObservedState], bool]) -> ObservedState:
    for _ in range(500):
        observed = await state(client)
        if check(observed):
            return observed
        await asyncio.sleep(0.01)
    raise AssertionError(f"state never reached: {observed}")


def states(observed: ObservedState) -> dict[str, ReplicaState]:
    return {r.id: r.state for r in observed.replicas}


async def test_serves_completions_whole_and_streamed(client: TestClient[Any, Any]) -> None:
    resp = await client.put(
        "/desired", data=desired(1, {"id": "l0", "model": "llama", "gpus": [0], "role": "serve"})
    )
    assert resp.status == 202
    observed = await wait_for(client, lambda s: states(s) == {"l0": ReplicaState.SERVING})
    assert observed.replicas[0].endpoint == "http://w0"
    assert (await (await client.get("/v1/models")).json())["data"][0]["id"] == "llama"

    resp = await client.post("/v1/completions", json={"model": "llama", "prompt": "hello", "max_tokens": 5})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["usage"]["completion_tokens"] == 5 and body["choices"][0]["text"]

    resp = await client.post(
        "/v1/chat/completions",
        json={
            "model": "llama",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
            "stream": True,
        },
        headers={REPLICA_HEADER: "l0"},
    )
    frames = [line for line in (await resp.text()).split("\n\n") if line]
    assert frames[-1] == "data: [DONE]"
    chunks = [json.loads(f.removeprefix("data: ")) for f in frames[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)

    metrics = await (await client.get("/metrics")).text()
    assert 'warmserve_worker_time_to_first_token_seconds_count{model="llama"} 2.0' in metrics
    assert 'warmserve_worker_requests_total{model="llama",outcome="ok"} 2.0' in metrics


async def test_errors_use_openai_format_and_name_the_field(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/completions", json={"model": "nope", "prompt": "x"})
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "model_not_found"
    resp = await client.post("/v1/completions", data=b"{bad json", headers=JSON)
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "body"
    resp = await client.post("/v1/completions", json={"model": "llama", "prompt": "x", "max_tokens": 10**9})
    assert (await resp.json())["error"]["param"] == "max_tokens"


async def test_prewarmed_replica_is_refused_then_promoted_without_reload(
    client: TestClient[Any, Any],
) -> None:
    await client.put(
        "/desired", data=desired(1, {"id": "l0", "model": "llama", "gpus": [0], "role": "prewarm"})
    )
    prewarmed = await wait_for(client, lambda s: states(s) == {"l0": ReplicaState.PREWARMED})
    assert prewarmed.gpus[0].used_bytes == 16 * GIB  # the weights only
    resp = await client.post("/v1/completions", json={"model": "llama", "prompt": "x"})
    assert resp.status == 503 and resp.headers["Retry-After"]

    await client.put(
        "/desired", data=desired(2, {"id": "l0", "model": "llama", "gpus": [0], "role": "serve"})
    )
    serving = await wait_for(
        client, lambda s: states(s) == {"l0": ReplicaState.SERVING} and s.observed_generation == 2
    )
    assert serving.gpus[0].used_bytes == 80 * GIB  # KV mapped behind the weights
    metrics = await (await client.get("/metrics")).text()
    assert 'warmserve_worker_load_seconds_count{model="llama"} 1.0' in metrics  # promotion loaded nothing

    await client.put(
        "/desired", data=desired(3, {"id": "l0", "model": "llama", "gpus": [0], "role": "prewarm"})
    )
    demoted = await wait_for(client, lambda s: states(s) == {"l0": ReplicaState.PREWARMED})
    assert demoted.gpus[0].used_bytes == 16 * GIB  # KV unmapped, weights kept


async def test_bad_or_stale_desired_state_keeps_the_previous_one(client: TestClient[Any, Any]) -> None:
    await client.put(
        "/desired", data=desired(5, {"id": "l0", "model": "llama", "gpus": [0], "role": "prewarm"})
    )
    await wait_for(client, lambda s: s.observed_generation == 5)
    resp = await client.put(
        "/desired", data=desired(6, {"id": "l0", "model": "llama", "gpus": [7], "role": "serve"})
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "replicas[0].gpus"
    resp = await client.put("/desired", data=desired(4))
    assert resp.status == 409
    observed = await state(client)
    assert states(observed) == {"l0": ReplicaState.PREWARMED}
    assert "replicas[0].gpus" in observed.error


async def test_with_a_control_token_only_its_holder_may_write_desired_state() -> None:
    """A stray writer cannot push a generation of 10^9 (which would lock the scheduler out until it
    reads it back) nor empty the worker: it is a 401 naming Authorization, and the holder goes on."""
    config = WorkerConfig(name="w0", gpus=2, gpu_memory_bytes=80 * GIB, endpoint="http://w0")
    runtime = WorkerRuntime(config, FakeEngine(gpu_profile("h100"), speed=0.0))
    async with TestClient(TestServer(create_app(runtime, control_token="s3cret"))) as c:
        owner = {"Authorization": "Bearer s3cret"}
        prewarm = {"id": "l0", "model": "llama", "gpus": [0], "role": "prewarm"}
        assert (await c.put("/desired", data=desired(1, prewarm), headers=owner)).status == 202
        for headers in ({}, {"Authorization": "Bearer guess"}, {"Authorization": "s3cret"}):
            resp = await c.put("/desired", data=desired(10**9), headers=headers)
            assert resp.status == 401
            assert (await resp.json())["error"]["param"] == "Authorization"
        assert (await c.put("/desired", data=desired(2, prewarm), headers=owner)).status == 202
        observed = await wait_for(c, lambda s: s.observed_generation == 2)
        assert states(observed) == {"l0": ReplicaState.PREWARMED}


async def test_a_worker_following_its_pod_takes_no_desired_state_over_http_without_a_token() -> None:
    """On Kubernetes the desired state comes from the Pod's annotation, through the same feed: without a
    control token, a PUT /desired from anyone who reaches the Pod is a 403, so a stray generation of 10^9
    cannot order the operator's annotations out."""
    config = WorkerConfig(name="w0", gpus=2, gpu_memory_bytes=80 * GIB, endpoint="http://w0")
    runtime = WorkerRuntime(config, FakeEngine(gpu_profile("h100"), speed=0.0))
    feed = desired_feed(runtime)
    async with TestClient(TestServer(create_app(runtime, feed, open_without_token=False))) as c:
        resp = await c.put("/desired", data=desired(10**9))
        assert resp.status == 403
        error = (await resp.json())["error"]
        assert error["param"] == "Authorization" and "--control-token" in error["message"]
        assert feed.generation < 10**9


async def test_pool_exhaustion_refuses_the_prewarm_and_spares_the_others(
    client: TestClient[Any, Any],
) -> None:
    models = {
        "llama": MODEL,
        "huge": {"weights": "/cache/huge", "weight_bytes": 70 * GIB, "engine_args": {"shape": "llama2-70b"}},
    }
    await client.put(
        "/desired",
        data=desired(
            1,
            {"id": "l0", "model": "llama", "gpus": [0], "role": "serve"},
            {"id": "h0", "model": "huge", "gpus": [0], "role": "prewarm"},
            {"id": "h1", "model": "huge", "gpus": [1], "role": "prewarm"},
            models=models,
        ),
    )
    observed = await wait_for(
        client,
        lambda s: (
            states(s) == {"l0": ReplicaState.SERVING, "h0": ReplicaState.FAILED, "h1": ReplicaState.PREWARMED}
        ),
    )
    failed = next(r for r in observed.replicas if r.id == "h0")
    assert "pool exhausted" in failed.reason


async def test_a_load_in_the_memory_of_a_cancelled_load_waits_for_it_instead_of_failing() -> None:
    """One desired state drops a replica still loading and loads another in its memory: the new load
    starts once the cancelled copy has given the memory back (it failed with "pool exhausted" before)."""
    config = WorkerConfig(name="w0", gpus=1, gpu_memory_bytes=24 * GIB, endpoint="http://w0")
    runtime = WorkerRuntime(config, FakeEngine(gpu_profile("h100"), speed=0.5))
    async with TestClient(TestServer(create_app(runtime))) as client:
        await client.put(
            "/desired", data=desired(1, {"id": "a", "model": "llama", "gpus": [0], "role": "prewarm"})
        )
        await wait_for(client, lambda s: states(s) == {"a": ReplicaState.LOADING})
        await client.put(
            "/desired", data=desired(2, {"id": "b", "model": "llama", "gpus": [0], "role": "prewarm"})
        )
        observed = await wait_for(
            client, lambda s: states(s).get("b") in (ReplicaState.PREWARMED, ReplicaState.FAILED)
        )
        assert states(observed) == {"b": ReplicaState.PREWARMED}, observed


@needs_promtool
async def test_metrics_pass_promtool(client: TestClient[Any, Any]) -> None:
    await client.put(
        "/desired", data=desired(1, {"id": "l0", "model": "llama", "gpus": [0], "role": "serve"})
    )
    await wait_for(client, lambda s: states(s) == {"l0": ReplicaState.SERVING})
    await client.post("/v1/completions", json={"model": "llama", "prompt": "hello", "max_tokens": 3})
    text = await (await client.get("/metrics")).text()
    assert_promtool_passes(text)


async def test_serving_replica_lends_idle_kv_to_a_prewarm_and_takes_it_back(
    client: TestClient[Any, Any],
) -> None:
    models = {"llama": MODEL, "qwen": {**MODEL, "weights": "/cache/qwen"}}
    serve = {"id": "l0", "model": "llama", "gpus": [0], "role": "serve"}
    await client.put("/desired", data=desired(1, serve, models=models))
    whole = await wait_for(client, lambda s: states(s) == {"l0": ReplicaState.SERVING})
    assert whole.gpus[0].used_bytes == 80 * GIB and whole.replicas[0].kv_total_bytes == 64 * GIB

    lend = {**serve, "kv_lend_bytes": 20 * GIB}
    borrowed = {"id": "q0", "model": "qwen", "gpus": [0], "role": "prewarm"}
    await client.put("/desired", data=desired(2, lend, borrowed, models=models))
    lent = await wait_for(client, lambda s: states(s).get("q0") is ReplicaState.PREWARMED)
    assert lent.gpus[0].lent_bytes == 20 * GIB
    assert lent.gpus[0].used_bytes == 80 * GIB - 4 * GIB  # 60 GiB of weights and mapped KV, 16 GiB borrowed
    assert next(r for r in lent.replicas if r.id == "l0").kv_total_bytes == 64 * GIB  # mapped plus lent
    assert next(r for r in lent.replicas if r.id == "q0").borrowed
    resp = await client.post("/v1/completions", json={"model": "llama", "prompt": "x", "max_tokens": 2})
    assert resp.status == 200

    await client.put("/desired", data=desired(3, serve, models=models))
    back = await wait_for(
        client, lambda s: states(s) == {"l0": ReplicaState.SERVING} and s.gpus[0].used_bytes == 80 * GIB
    )
    assert back.gpus[0].lent_bytes == 0


TWO_MODELS = {"llama": MODEL, "qwen": {**MODEL, "weights": "/cache/qwen"}}
LENDER = {"id": "l0", "model": "llama", "gpus": [0], "role": "serve", "kv_lend_bytes": 20 * GIB}
GUEST = {"id": "q0", "model": "qwen", "gpus": [0], "role": "prewarm"}


async def guest_in_lent_kv(client: TestClient[Any, Any]) -> ObservedState:
    """l0 serves and lends 20 GiB of its KV space on GPU 0; q0 is prewarmed there (generation 2)."""
    await client.put("/desired", data=desired(1, {**LENDER, "kv_lend_bytes": 0}, models=TWO_MODELS))
    await wait_for(client, lambda s: states(s) == {"l0": ReplicaState.SERVING})
    await client.put("/desired", data=desired(2, LENDER, GUEST, models=TWO_MODELS))
    return await wait_for(client, lambda s: states(s).get("q0") is ReplicaState.PREWARMED)


async def test_a_prewarm_in_lent_kv_is_no_longer_borrowed_once_its_lender_stops_serving(
    client: TestClient[Any, Any],
) -> None:
    lent = await guest_in_lent_kv(client)
    assert next(r for r in lent.replicas if r.id == "q0").borrowed

    demoted = {**LENDER, "role": "prewarm", "kv_lend_bytes": 0}
    await client.put("/desired", data=desired(3, demoted, GUEST, models=TWO_MODELS))
    after = await wait_for(client, lambda s: states(s)["l0"] is ReplicaState.PREWARMED)
    # No serving replica lends anything on GPU 0 now: q0 sits in plain pool memory, and says so (a
    # replica still flagged borrowed there made every snapshot inconsistent, so the scheduler held steady).
    assert not next(r for r in after.replicas if r.id == "q0").borrowed


async def test_a_borrowed_prewarm_promoted_in_its_lenders_place_serves_unborrowed(
    client: TestClient[Any, Any],
) -> None:
    """The switch the scheduler orders in one write: the lender demoted, its guest promoted. The guest
    owns its memory from then on; a serving replica still flagged borrowed is a report the scheduler
    refuses (protocol.loads_borrowed)."""
    await guest_in_lent_kv(client)
    switched = ({**LENDER, "role": "prewarm", "kv_lend_bytes": 0}, {**GUEST, "role": "serve"})
    await client.put("/desired", data=desired(3, *switched, models=TWO_MODELS))
    after = await wait_for(client, lambda s: states(s).get("q0") is ReplicaState.SERVING)
    assert not next(r for r in after.replicas if r.id == "q0").borrowed


async def test_a_promotion_short_of_kv_space_waits_for_its_draining_neighbour_instead_of_failing() -> None:
    """In one write, a serving lender with a request in flight is dropped and its guest promoted, the guest
    keeping room for one request of its ``context_length`` that only the lender's memory leaves. The guest
    is promoted once the lender has drained and released; promoted at once, it found 4 GiB free where it
    keeps 40 GiB, and failed."""
    config = WorkerConfig(name="w0", gpus=1, gpu_memory_bytes=80 * GIB, endpoint="http://w0")
    runtime = WorkerRuntime(config, FakeEngine(gpu_profile("h100"), speed=0.05))
    models = {**TWO_MODELS, "qwen": {**TWO_MODELS["qwen"], "context_length": 40 * 2**13}}  # 40 GiB kept
    async with TestClient(TestServer(create_app(runtime))) as client:
        await client.put("/desired", data=desired(1, {**LENDER, "kv_lend_bytes": 0}, models=models))
        await wait_for(client, lambda s: states(s) == {"l0": ReplicaState.SERVING})
        await client.put("/desired", data=desired(2, LENDER, GUEST, models=models))
        await wait_for(client, lambda s: states(s).get("q0") is ReplicaState.PREWARMED)
        body = {"model": "llama", "prompt": "x", "max_tokens": 2000}
        request = asyncio.create_task(client.post("/v1/completions", json=body))
        await wait_for(client, lambda s: any(r.inflight for r in s.replicas))
        await client.put("/desired", data=desired(3, {**GUEST, "role": "serve"}, models=models))
        draining = await wait_for(client, lambda s: states(s).get("l0") is ReplicaState.DRAINING)
        assert states(draining)["q0"] is ReplicaState.PREWARMED  # waiting, not failed
        after = await wait_for(
            client, lambda s: states(s).get("q0") in (ReplicaState.SERVING, ReplicaState.FAILED)
        )
        assert states(after) == {"q0": ReplicaState.SERVING}, after
        assert (await request).status == 200


HOSTILE_BODIES = {
    "an integer over the digit limit": b'{"model": "llama", "prompt": "x", "max_tokens": '
    + b"9" * 5000
    + b"}",
    "nesting 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "bytes that are not UTF-8": b'{"model": "llama", "prompt": "' + bytes([0xFF, 0xFE]) + b'"}',
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
@pytest.mark.parametrize(
    ("method", "path", "param"), [("PUT", "/desired", "desired"), ("POST", "/v1/completions", "body")]
)
async def test_a_hostile_body_is_a_400_naming_it_never_a_500(
    client: TestClient[Any, Any], body: bytes, method: str, path: str, param: str
) -> None:
    resp = await client.request(method, path, data=body, headers=JSON)
    answer = await resp.json()
    assert resp.status == 400, answer
    assert answer["error"]["param"] == param


async def test_a_state_reached_by_instant_steps_alone_is_reported_applied(
    client: TestClient[Any, Any],
) -> None:
    """Lending KV space finishes at once and starts no task whose end would wake the convergence loop: the
    worker served generation 2 but reported generation 1 until some later change."""
    serve = {"id": "l0", "model": "llama", "gpus": [0], "role": "serve"}
    await client.put("/desired", data=desired(1, serve))
    await wait_for(client, lambda s: s.observed_generation == 1 and states(s) == {"l0": ReplicaState.SERVING})
    await client.put("/desired", data=desired(2, {**serve, "kv_lend_bytes": 20 * GIB}))
    lent = await wait_for(client, lambda s: s.observed_generation == 2)
    assert lent.gpus[0].lent_bytes == 20 * GIB


async def test_a_replica_promoted_beside_another_keeps_its_kv_space_and_lends_the_neighbour_room(
    client: TestClient[Any, Any],
) -> None:
    """Promoted on a GPU that also holds a prewarmed replica, a replica's KV space is all its weights leave
    (as the scheduler counts it), the neighbour's memory is lent and the neighbour is its guest. Counting
    only the memory free beside the neighbour, it lent the scheduler's share on top, kept one 2 MiB chunk
    of KV (16 tokens) and refused every request over that with a 400."""
    llama = {"id": "l0", "model": "llama", "gpus": [0], "role": "prewarm"}
    await client.put("/desired", data=desired(1, llama, GUEST, models=TWO_MODELS))
    await wait_for(
        client, lambda s: states(s) == {"l0": ReplicaState.PREWARMED, "q0": ReplicaState.PREWARMED}
    )
    serving = {**llama, "role": "serve", "kv_lend_bytes": 40 * GIB}  # the scheduler's share: 64 GiB - reserve
    await client.put("/desired", data=desired(2, serving, GUEST, models=TWO_MODELS))
    promoted = await wait_for(client, lambda s: states(s).get("l0") is ReplicaState.SERVING)
    owner = next(r for r in promoted.replicas if r.id == "l0")
    assert owner.kv_total_bytes == 64 * GIB and promoted.gpus[0].lent_bytes == 40 * GIB
    assert next(r for r in promoted.replicas if r.id == "q0").borrowed
    body = {"model": "llama", "prompt": "x", "max_tokens": 200}
    resp = await client.post("/v1/completions", json=body)
    assert resp.status == 200, await resp.text()


async def test_a_request_of_the_maximum_length_is_served_beside_prewarmed_neighbours_however_much_is_lent(
    client: TestClient[Any, Any],
) -> None:
    """A serving replica never lends the KV space of one request of its model's ``context_length``
    (``protocol.state.kept_kv_bytes``): asked to lend all of it, with a neighbour prewarmed in it, it kept
    one 2 MiB chunk (16 tokens) and refused such a request with a 503 however long it was retried."""
    models = {**TWO_MODELS, "llama": {**MODEL, "context_length": 4096}}  # 128 KiB a token: 512 MiB kept
    llama = {"id": "l0", "model": "llama", "gpus": [0], "role": "prewarm"}
    await client.put("/desired", data=desired(1, llama, GUEST, models=models))
    await wait_for(
        client, lambda s: states(s) == {"l0": ReplicaState.PREWARMED, "q0": ReplicaState.PREWARMED}
    )
    greedy = {**llama, "role": "serve", "kv_lend_bytes": 64 * GIB}
    await client.put("/desired", data=desired(2, greedy, GUEST, models=models))
    promoted = await wait_for(client, lambda s: states(s).get("l0") is ReplicaState.SERVING)
    assert promoted.gpus[0].lent_bytes == 64 * GIB - 512 * 2**20
    longest = {"model": "llama", "prompt": [5], "max_tokens": 4095}
    resp = await client.post("/v1/completions", json=longest)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["usage"]["completion_tokens"] == 4095
    resp = await client.post("/v1/completions", json={**longest, "max_tokens": 4096})
    answer = await resp.json()
    assert resp.status == 400 and answer["error"]["param"] == "max_tokens", answer
    assert "context length (4096 tokens)" in answer["error"]["message"]


async def serving_client(client: TestClient[Any, Any]) -> None:
    replica = {"id": "l0", "model": "llama", "gpus": [0], "role": "serve"}
    await client.put("/desired", data=desired(1, replica))
    await wait_for(client, lambda s: states(s) == {"l0": ReplicaState.SERVING})


async def test_token_ids_beyond_the_vocabulary_are_a_400_naming_the_token(
    client: TestClient[Any, Any],
) -> None:
    await serving_client(client)
    resp = await client.post("/v1/completions", json={"model": "llama", "prompt": [5, 999], "max_tokens": 2})
    assert resp.status == 200, await resp.text()
    for stream in (False, True):
        body = {"model": "llama", "prompt": [5, 1000], "max_tokens": 2, "stream": stream}
        resp = await client.post("/v1/completions", json=body)
        answer = await resp.json()
        assert resp.status == 400, answer
        assert answer["error"]["param"] == "prompt[1]" and "[0, 1000)" in answer["error"]["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_declared_json_is_a_400_naming_content_type(
    client: TestClient[Any, Any], content_type: str
) -> None:
    await serving_client(client)
    body = json.dumps({"model": "llama", "prompt": "hi", "max_tokens": 2})
    for path in ("/v1/completions", "/v1/chat/completions"):
        resp = await client.post(path, data=body, headers={"Content-Type": content_type})
        answer = await resp.json()
        assert resp.status == 400, answer
        assert answer["error"]["param"] == "Content-Type"
    json_utf8 = {"Content-Type": "application/json; charset=utf-8"}
    assert (await client.post("/v1/completions", data=body, headers=json_utf8)).status == 200


async def stalled_body_answer(host: str, port: int, method: str, path: str) -> bytes:
    """What a server answers a request whose headers are complete and whose body stops after one byte."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: 100\r\n\r\n{{".encode())
        await writer.drain()
        async with asyncio.timeout(10):  # the answer is one write; the server then ignores the rest a while
            return await reader.read(65536)
    finally:
        writer.close()


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/completions"), ("PUT", "/desired")])
async def test_a_stalled_body_is_answered_408_and_the_connection_closed(method: str, path: str) -> None:
    config = WorkerConfig(name="w0", gpus=1, gpu_memory_bytes=80 * GIB, endpoint="http://w0")
    runtime = WorkerRuntime(config, FakeEngine(gpu_profile("h100"), speed=0.0))
    async with TestClient(TestServer(create_app(runtime, body_timeout_s=0.3))) as c:
        assert c.port is not None
        answer = await stalled_body_answer("127.0.0.1", c.port, method, path)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"Connection: close" in answer and b'"param":"body"' in answer.replace(b" ", b"")
