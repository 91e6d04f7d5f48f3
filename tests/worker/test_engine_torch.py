"""The torch engine on a real tiny Llama: zero-copy weights, KV in the slot, sampling, batching, cancel."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from warmserve.protocol.errors import InvalidFieldError, WarmServeError
from warmserve.protocol.state import ModelSpec
from warmserve.worker.engines.base import GenerateRequest, Instance, TokenEvent
from warmserve.worker.engines.torch_engine import TorchEngine, TorchPrepared, slot_from_checkpoint
from warmserve.worker.layout import WeightLayout
from warmserve.worker.tiny_model import make_tiny_model

PROMPT = "Hello world, how are you?"
KV_BYTES = 1 << 22


@dataclasses.dataclass(frozen=True)
class Replica:
    engine: TorchEngine
    prepared: TorchPrepared
    slot: torch.Tensor
    layout: WeightLayout
    directory: Path


async def prepare(directory: Path) -> Replica:
    slot, layout = slot_from_checkpoint(directory)
    spec = ModelSpec("tiny", str(directory), layout.total_bytes, max_concurrency=4)
    engine = TorchEngine()
    prepared = await engine.prepare(spec, slot, layout)
    assert isinstance(prepared, TorchPrepared)
    return Replica(engine, prepared, slot, layout, directory)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def replica(tiny_dir: Path) -> Replica:
    return asyncio.run(prepare(tiny_dir))


async def collect(instance: Instance, request: GenerateRequest) -> list[TokenEvent]:
    return [event async for event in instance.generate(request)]


def reference_greedy(directory: Path, prompt_ids: list[int], n: int) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(directory)
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return [int(t) for t in out[0, len(prompt_ids) :]]


def in_slot(tensor: torch.Tensor, slot: torch.Tensor) -> bool:
    start = slot.data_ptr()
    return start <= tensor.data_ptr() and tensor.data_ptr() + tensor.nbytes <= start + slot.numel()


async def test_greedy_tokens_equal_a_normally_loaded_model(replica: Replica) -> None:
    instance = await replica.engine.promote(replica.prepared, None, KV_BYTES)
    events = await collect(instance, GenerateRequest(PROMPT, max_tokens=20))
    ids = replica.prepared.tokenizer.encode(PROMPT)
    assert [e.token_id for e in events] == reference_greedy(replica.directory, ids, 20)[: len(events)]
    assert events[0].prompt_tokens == len(ids)
    assert "".join(e.text for e in events) == replica.prepared.tokenizer.decode(
        [e.token_id for e in events], skip_special_tokens=True
    ).rstrip("\ufffd")


async def test_every_parameter_is_a_view_of_the_slot(replica: Replica) -> None:
    params = list(replica.prepared.model.parameters())
    assert params and all(in_slot(p, replica.slot) for p in params)
    assert sum(p.nbytes for p in params) <= replica.layout.total_bytes
    embed = replica.prepared.model.model.embed_tokens.weight
    entry = replica.layout.entries["model.embed_tokens.weight"]
    assert embed.data_ptr() == replica.slot.data_ptr() + entry.offset


async def test_tied_embeddings_share_one_view(tiny_dir: Path, tmp_path: Path) -> None:
    config = LlamaConfig.from_pretrained(tiny_dir)
    config.tie_word_embeddings = True
    torch.manual_seed(3)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_dir / name).read_bytes())
    tied = await prepare(tmp_path)
    assert "lm_head.weight" not in tied.layout.entries
    model = tied.prepared.model
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    instance = await tied.engine.promote(tied.prepared, None, KV_BYTES)
    events = await collect(instance, GenerateRequest((5, 6, 7), max_tokens=8))
    assert [e.token_id for e in events] == reference_greedy(tmp_path, [5, 6, 7], 8)[: len(events)]


async def test_kv_lives_in_the_given_region(replica: Replica) -> None:
    kv = torch.zeros(KV_BYTES, dtype=torch.uint8)
    instance = await replica.engine.promote(replica.prepared, kv, KV_BYTES)
    per_token = replica.prepared.kv_bytes_per_token
    assert per_token == 2 * 2 * 2 * 32 * 4  # layers × (K, V) × kv heads × head dim × fp32
    stream = instance.generate(GenerateRequest((1, 2, 3), max_tokens=5, ignore_eos=True))
    first = await anext(stream)
    assert first.index == 0 and instance.inflight == 1  # streamed before the request is done
    assert instance.kv_used_bytes == 8 * per_token
    written = kv[: 8 * per_token].view(torch.float32).view(2, 2, 1, 2, 8, 32)
    assert written[:, :, :, :, :3].abs().sum() > 0  # the prompt's keys and values
    assert written[:, :, :, :, 4:].abs().sum() == 0  # not generated yet
    rest = [e async for e in stream]
    assert len(rest) == 4 and rest[-1].finish_reason == "length"
    assert instance.kv_used_bytes == 0


async def test_temperature_sampling_is_reproducible_with_a_seed(replica: Replica) -> None:
    instance = await replica.engine.promote(replica.prepared, None, KV_BYTES)

    async def run(seed: int) -> list[int]:
        request = GenerateRequest(
            PROMPT, max_tokens=12, temperature=1.0, top_p=0.95, seed=seed, ignore_eos=True
        )
        return [e.token_id for e in await collect(instance, request)]

    first, again, other = await run(11), await run(11), await run(12)
    assert first == again
    assert first != other
    # A vanishing top_p keeps only the most likely token: sampling becomes greedy.
    nucleus = GenerateRequest(PROMPT, max_tokens=12, temperature=1.5, top_p=1e-6, seed=5, ignore_eos=True)
    greedy = GenerateRequest(PROMPT, max_tokens=12, ignore_eos=True)
    assert [e.token_id for e in await collect(instance, nucleus)] == [
        e.token_id for e in await collect(instance, greedy)
    ]


async def test_concurrent_sequences_each_get_their_solo_output(replica: Replica) -> None:
    instance = await replica.engine.promote(replica.prepared, None, KV_BYTES)
    a = GenerateRequest(PROMPT, max_tokens=10, ignore_eos=True)
    b = GenerateRequest((9, 8, 7, 6, 5), max_tokens=6, ignore_eos=True)
    solo_a, solo_b = await collect(instance, a), await collect(instance, b)
    together = await asyncio.gather(collect(instance, a), collect(instance, b), collect(instance, a))
    assert [[e.token_id for e in r] for r in together] == [
        [e.token_id for e in solo_a],
        [e.token_id for e in solo_b],
        [e.token_id for e in solo_a],
    ]


async def test_a_stop_string_ends_the_stream(replica: Replica) -> None:
    instance = await replica.engine.promote(replica.prepared, None, KV_BYTES)
    full = "".join(
        e.text for e in await collect(instance, GenerateRequest(PROMPT, max_tokens=12, ignore_eos=True))
    )
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    events = await collect(instance, GenerateRequest(PROMPT, max_tokens=12, ignore_eos=True, stop=(stop,)))
    assert events[-1].finish_reason == "stop"
    assert "".join(e.text for e in events) == full[: full.index(stop)]


async def test_cancelling_frees_kv(replica: Replica) -> None:
    instance = await replica.engine.promote(replica.prepared, None, KV_BYTES)
    stream = instance.generate(GenerateRequest(PROMPT, max_tokens=200, ignore_eos=True))
    await anext(stream)
    assert instance.kv_used_bytes > 0
    await stream.aclose()
    assert (instance.inflight, instance.kv_used_bytes) == (0, 0)


async def test_demote_keeps_the_weights_and_promote_again_serves(replica: Replica) -> None:
    before = [p.data_ptr() for p in replica.prepared.model.parameters()]
    instance = await replica.engine.promote(replica.prepared, None, KV_BYTES)
    first = await collect(instance, GenerateRequest(PROMPT, max_tokens=8))
    prepared = await replica.engine.demote(instance)
    assert prepared is replica.prepared
    assert [p.data_ptr() for p in replica.prepared.model.parameters()] == before
    with pytest.raises(WarmServeError, match="demoted"):
        await collect(instance, GenerateRequest(PROMPT))
    again = await replica.engine.promote(prepared, None, KV_BYTES)
    assert [e.token_id for e in await collect(again, GenerateRequest(PROMPT, max_tokens=8))] == [
        e.token_id for e in first
    ]


async def test_bad_input_names_the_field(replica: Replica, tiny_dir: Path) -> None:
    engine = replica.engine
    instance = await engine.promote(replica.prepared, None, KV_BYTES)
    with pytest.raises(InvalidFieldError) as token:
        await collect(instance, GenerateRequest((1, 5000), max_tokens=2))
    assert token.value.field == "prompt[1]"
    with pytest.raises(InvalidFieldError) as too_long:
        await collect(instance, GenerateRequest((1,), max_tokens=4000))
    assert too_long.value.field == "max_tokens"
    with pytest.raises(InvalidFieldError) as kv:
        await engine.promote(replica.prepared, torch.zeros(16, dtype=torch.float32), 64)
    assert kv.value.field == "kv"
    spec = replica.prepared.spec
    with pytest.raises(InvalidFieldError) as none:
        await engine.prepare(spec, None, None)
    assert none.value.field == "weights"
    entries = dict(replica.layout.entries)
    del entries["model.norm.weight"]
    with pytest.raises(InvalidFieldError) as missing:
        await engine.prepare(spec, replica.slot, dataclasses.replace(replica.layout, entries=entries))
    assert missing.value.field == "layout" and "model.norm.weight" in missing.value.expected
    entries = dict(replica.layout.entries)
    entries["model.norm.weight"] = dataclasses.replace(entries["model.norm.weight"], shape=(32,), nbytes=128)
    with pytest.raises(InvalidFieldError) as shape:
        await engine.prepare(spec, replica.slot, dataclasses.replace(replica.layout, entries=entries))
    assert shape.value.field == "layout.model.norm.weight.shape"
    config = json.loads((tiny_dir / "config.json").read_text())
    with pytest.raises(InvalidFieldError) as directory:
        await engine.prepare(
            dataclasses.replace(spec, weights=str(tiny_dir / "nope")), replica.slot, replica.layout
        )
    assert directory.value.field == "spec.weights" and config["model_type"] == "llama"


async def test_a_qwen2_checkpoint_in_bf16_with_grouped_query_attention(
    tiny_dir: Path, tmp_path: Path
) -> None:
    config = Qwen2Config(
        hidden_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_hidden_layers=2,
        intermediate_size=128,
        vocab_size=1000,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    torch.manual_seed(4)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_dir / name).read_bytes())
    qwen = await prepare(tmp_path)
    assert qwen.layout.entries["model.layers.0.self_attn.q_proj.bias"].dtype == "BF16"
    assert qwen.prepared.kv_bytes_per_token == 2 * 2 * 1 * 32 * 2  # layers × (K, V) × 1 KV head × 32 × bf16
    instance = await qwen.engine.promote(qwen.prepared, None, KV_BYTES)
    events = await collect(instance, GenerateRequest((5, 6, 7), max_tokens=8, ignore_eos=True))
    assert [e.token_id for e in events] == reference_greedy(tmp_path, [5, 6, 7], 8)
