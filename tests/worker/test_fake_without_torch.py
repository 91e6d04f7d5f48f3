"""A fake-GPU worker runs where torch is not installed: its whole path (options, runtime, fake pool, fake
engine, HTTP server) imports no torch, and it serves a generation."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import asyncio, json, sys
sys.modules["torch"] = None  # every `import torch` from here on fails, as where torch is not installed

from aiohttp.test_utils import TestClient, TestServer

from warmserve.worker.process import WorkerOptions, build_runtime
from warmserve.worker.server import create_app

MODEL = {"weights": "m", "weight_bytes": 2**30, "max_concurrency": 4, "engine_args": {"shape": "llama2-7b"}}
REPLICA = {"id": "r0", "model": "m", "gpus": [0], "role": "serve"}


async def main() -> None:
    runtime = build_runtime(WorkerOptions(name="w0", gpus=1, gpu_memory_bytes=40 * 2**30, speed=0.0))
    async with TestClient(TestServer(create_app(runtime))) as client:
        doc = {"worker": "w0", "generation": 1, "models": {"m": MODEL}, "replicas": [REPLICA]}
        assert (await client.put("/desired", data=json.dumps(doc))).status == 202
        for _ in range(500):
            body = await (await client.get("/state")).json()
            if [r["state"] for r in body["replicas"]] == ["serving"]:
                break
            await asyncio.sleep(0.01)
        answer = await client.post("/v1/completions", json={"model": "m", "prompt": "hi", "max_tokens": 3})
        print(answer.status, (await answer.json())["usage"]["completion_tokens"])
    print("torch" in sys.modules and sys.modules["torch"] is not None)


asyncio.run(main())
"""


def test_a_fake_gpu_worker_serves_without_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["200", "3", "False"]
