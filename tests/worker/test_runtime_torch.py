"""The torch engine through the runtime, on the host pool and a store made by `warmserve make-tiny-model`.

In a real `warmserve worker --engine torch` process (subprocess + HTTP): prewarm, promote, demote and
promote again with exactly one load (``load_seconds`` count 1), a real completion equal to
``transformers`` ``from_pretrained`` + ``generate`` on the same checkpoint, and corrupt weights failing
that replica with the reason while another serves on. In-process (the only place pointers can be seen):
the serving model's parameters and KV cache lie inside the replica's pool slot, at the same addresses
after a demote and a second promotion — zero copy.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
from aiohttp.test_utils import TestClient, TestServer
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.worker.test_worker_process import WorkerProcess, states, workers  # noqa: F401  (a fixture)
from warmserve.cli import main
from warmserve.protocol.state import ObservedState, ReplicaState
from warmserve.worker.engines.torch_engine import TorchEngine, TorchInstance
from warmserve.worker.runtime import WorkerConfig, WorkerRuntime
from warmserve.worker.server import create_app

MIB = 2**20
PROMPT = "Hello world, how are you?"
TOKENS = 12
LOAD_COUNT = re.compile(r'warmserve_worker_load_seconds_count\{model="(\w+)"\} (\S+)')


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store with a good tiny Llama and a copy whose weights file is cut short."""
    root = tmp_path_factory.mktemp("store")
    assert main(["make-tiny-model", str(root / "tiny")]) == 0
    assert main(["make-tiny-model", str(root / "broken"), "--seed", "1"]) == 0
    weights = next((root / "broken").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return root


def document(generation: int, *replicas: tuple[str, str, int, str]) -> str:
    models = {
        name: {"weights": name, "weight_bytes": MIB, "max_concurrency": 4} for name in ("tiny", "broken")
    }
    listed = [{"id": i, "model": m, "gpus": [g], "role": role} for i, m, g, role in replicas]
    return json.dumps({"worker": "t0", "generation": generation, "models": models, "replicas": listed})


def reference_tokens(directory: Path) -> list[int]:
    """Greedy continuation by transformers itself, loading the checkpoint the usual way."""
    ids = AutoTokenizer.from_pretrained(directory)(PROMPT, return_tensors="pt").input_ids
    model = AutoModelForCausalLM.from_pretrained(directory)
    out = model.generate(ids, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False)
    return [int(t) for t in out[0, ids.shape[1] :]]


def load_counts(metrics: str) -> dict[str, float]:
    return {model: float(count) for model, count in LOAD_COUNT.findall(metrics)}


@pytest.mark.slow
def test_a_torch_worker_process_switches_without_reloading_and_serves_like_transformers(
    workers: Callable[..., WorkerProcess],  # noqa: F811
    store: Path,
) -> None:
    worker = workers("t0", "--engine", "torch", "--store", str(store), "--gpus", "2", "--gpu-memory", "64MiB")
    assert worker.put(document(1, ("a", "tiny", 0, "prewarm"))).status_code == 202
    prewarmed = worker.wait_for(lambda s: states(s) == {"a": ReplicaState.PREWARMED})
    assert prewarmed.gpus[0].used_bytes == 2 * MIB  # the weights only, in one 2 MiB chunk

    worker.put(document(2, ("a", "tiny", 0, "serve")))
    worker.wait_for(lambda s: states(s) == {"a": ReplicaState.SERVING})
    worker.put(document(3, ("a", "tiny", 0, "prewarm")))
    demoted = worker.wait_for(lambda s: states(s) == {"a": ReplicaState.PREWARMED})
    assert demoted.gpus[0].used_bytes == 2 * MIB  # KV unmapped, weights kept
    worker.put(document(4, ("a", "tiny", 0, "serve"), ("b", "broken", 1, "serve")))
    both = worker.wait_for(lambda s: s.observed_generation == 4)
    assert states(both) == {"a": ReplicaState.SERVING, "b": ReplicaState.FAILED}
    broken = next(r for r in both.replicas if r.id == "b")
    assert "broken" in broken.reason  # the store's reason, naming the model
    assert both.gpus[1].used_bytes == 0  # a failed replica keeps no memory

    metrics = requests.get(worker.url + "/metrics", timeout=5).text
    assert load_counts(metrics)["tiny"] == 1.0  # two promotions and a demotion loaded nothing again

    done = worker.complete("tiny", PROMPT, TOKENS)
    assert done.status_code == 200, done.text
    tokenizer = AutoTokenizer.from_pretrained(store / "tiny")
    assert done.json()["choices"][0]["text"] == tokenizer.decode(
        reference_tokens(store / "tiny"), skip_special_tokens=True
    ).rstrip("\ufffd")
    unavailable = worker.complete("broken", PROMPT, 2)
    assert unavailable.status_code == 503  # it exists here, failed: not a 404
    assert worker.stop() == 0, worker.log.read_text()[-3000:]


@pytest.fixture
async def served(store: Path) -> AsyncIterator[tuple[TestClient[Any, Any], WorkerRuntime]]:
    config = WorkerConfig("t0", 1, 64 * MIB, pool_backend="host", store_root=store, endpoint="http://t0")
    runtime = WorkerRuntime(config, TorchEngine())
    async with TestClient(TestServer(create_app(runtime))) as client:
        yield client, runtime


async def wait_state(client: TestClient[Any, Any], want: dict[str, ReplicaState]) -> ObservedState:
    for _ in range(1500):
        state = ObservedState.from_json(await (await client.get("/state")).text())
        if states(state) == want:
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"not reached: {want}, last {state}")


def addresses(instance: TorchInstance) -> list[tuple[int, int]]:
    return [(p.data_ptr(), p.nbytes) for p in instance.torch_prepared.model.parameters()]


async def test_the_served_model_lives_in_its_slot_and_stays_there(
    served: tuple[TestClient[Any, Any], WorkerRuntime], store: Path
) -> None:
    client, runtime = served
    await client.put("/desired", data=document(1, ("a", "tiny", 0, "serve")))
    await wait_state(client, {"a": ReplicaState.SERVING})
    first = runtime.acquire("tiny")
    assert isinstance(first, TorchInstance)
    (slot,) = runtime.pools[0]._slots.values()  # the replica's one slot (pools expose no lookup)
    inside = [
        slot.address <= ptr and ptr + n <= slot.address + slot.size_bytes for ptr, n in addresses(first)
    ]
    assert inside and all(inside)
    weights_end = max(ptr + n for ptr, n in addresses(first))
    assert weights_end <= first.kv.data_ptr() < slot.address + slot.size_bytes  # KV right after the weights
    assert first.kv.data_ptr() + first.kv.nbytes <= slot.address + slot.size_bytes

    await client.put("/desired", data=document(2, ("a", "tiny", 0, "prewarm")))
    await wait_state(client, {"a": ReplicaState.PREWARMED})
    await client.put("/desired", data=document(3, ("a", "tiny", 0, "serve")))
    await wait_state(client, {"a": ReplicaState.SERVING})
    second = runtime.acquire("tiny")
    assert isinstance(second, TorchInstance) and second is not first
    assert addresses(second) == addresses(first)  # the same bytes, not a copy
    assert load_counts(runtime.metrics.render().decode())["tiny"] == 1.0
    assert torch.equal(second.torch_prepared.weights[:64], first.torch_prepared.weights[:64])
