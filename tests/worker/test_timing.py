"""The timing model: hand-checked numbers, roofline regimes, monotonicity, registries and bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import ModelSpec
from warmserve.worker.timing import (
    GPU_PROFILES,
    MODEL_SHAPES,
    Iteration,
    Tier,
    cold_start_seconds,
    decode_step_seconds,
    engine_start_seconds,
    gpu_profile,
    iteration_seconds,
    load_seconds,
    model_shape,
    prefill_seconds,
    promotion_seconds,
    shape_for_spec,
    shape_from_config,
)

LLAMA2_7B = model_shape("llama2-7b")
A100 = gpu_profile("a100")


def test_llama2_7b_sizes_match_the_public_config() -> None:
    assert LLAMA2_7B.weight_bytes == 13_476_831_232
    assert LLAMA2_7B.kv_bytes_per_token == 2 * 32 * 32 * 128 * 2 == 524_288  # 0.5 MiB per token in fp16
    assert model_shape("llama2-70b").kv_bytes_per_token == 2 * 80 * 8 * 128 * 2  # GQA: 8 KV heads


def test_decode_step_by_hand_llama2_7b_a100() -> None:
    # Batch 1, 1 token of context: reads the weights and one token's KV, writes one token's KV.
    moved = 13_476_831_232 + 2 * 524_288
    flops = 2 * 6_738_415_616 + 4 * 32 * 32 * 128
    expected = max(moved / 2039e9, flops / 312e12) + 0.002
    assert decode_step_seconds(LLAMA2_7B, A100, 1, 1, 1) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.00861, abs=1e-5)  # 6.6 ms memory time + 2 ms overhead


def test_prefill_by_hand_llama2_7b_a100_is_compute_bound() -> None:
    n = 2048
    flops = 2 * 6_738_415_616 * n + 4 * 32 * 32 * 128 * n * (n + 1) // 2
    assert prefill_seconds(LLAMA2_7B, A100, 1, n) == pytest.approx(flops / 312e12 + 0.002, rel=1e-12)


def test_decode_is_memory_bound_at_small_batch_and_prefill_compute_bound() -> None:
    faster_compute = dataclasses.replace(A100, peak_flops=A100.peak_flops * 2)
    faster_memory = dataclasses.replace(A100, memory_bandwidth=A100.memory_bandwidth * 2)
    decode = decode_step_seconds(LLAMA2_7B, A100, 1, 1, 512)
    assert decode_step_seconds(LLAMA2_7B, faster_compute, 1, 1, 512) == decode
    assert decode_step_seconds(LLAMA2_7B, faster_memory, 1, 1, 512) < decode
    prefill = prefill_seconds(LLAMA2_7B, A100, 1, 4096)
    assert prefill_seconds(LLAMA2_7B, faster_memory, 1, 4096) == prefill
    assert prefill_seconds(LLAMA2_7B, faster_compute, 1, 4096) < prefill


def test_tensor_parallelism_divides_the_roofline_time() -> None:
    overhead = A100.step_overhead_s
    for tp in (2, 4, 8):
        one = prefill_seconds(LLAMA2_7B, A100, 1, 1000) - overhead
        assert prefill_seconds(LLAMA2_7B, A100, tp, 1000) - overhead == pytest.approx(one / tp)


def test_batching_raises_decode_throughput() -> None:
    per_token = [decode_step_seconds(LLAMA2_7B, A100, 1, b, 256 * b) / b for b in (1, 8, 64)]
    assert per_token[0] > per_token[1] > per_token[2]


def test_h100_is_faster_than_a100_for_every_shape() -> None:
    h100 = gpu_profile("h100")
    for shape in MODEL_SHAPES.values():
        assert prefill_seconds(shape, h100, 1, 512) < prefill_seconds(shape, A100, 1, 512)
        assert decode_step_seconds(shape, h100, 1, 4, 4096) < decode_step_seconds(shape, A100, 1, 4, 4096)


@given(
    prompt=st.integers(1, 8192),
    extra=st.integers(1, 8192),
    batch=st.integers(1, 256),
    context=st.integers(0, 100_000),
)
def test_costs_grow_with_work(prompt: int, extra: int, batch: int, context: int) -> None:
    for shape in MODEL_SHAPES.values():
        assert prefill_seconds(shape, A100, 1, prompt) <= prefill_seconds(shape, A100, 1, prompt + extra)
        small = decode_step_seconds(shape, A100, 1, batch, batch + context)
        assert small <= decode_step_seconds(shape, A100, 1, batch + 1, batch + 1 + context + extra)
        assert small >= A100.step_overhead_s


@given(
    prefills=st.lists(st.integers(1, 4096), max_size=8), decodes=st.lists(st.integers(1, 4096), max_size=8)
)
def test_a_mixed_iteration_costs_no_more_than_its_parts_run_apart(
    prefills: list[int], decodes: list[int]
) -> None:
    mixed = iteration_seconds(LLAMA2_7B, A100, 1, Iteration(tuple(prefills), tuple(decodes)))
    apart = iteration_seconds(LLAMA2_7B, A100, 1, Iteration(tuple(prefills))) + iteration_seconds(
        LLAMA2_7B, A100, 1, Iteration(decode_contexts=tuple(decodes))
    )
    assert mixed <= apart + 1e-12
    assert (mixed == 0.0) == (not prefills and not decodes)


def test_load_time_per_tier() -> None:
    nbytes = LLAMA2_7B.weight_bytes
    assert load_seconds(nbytes, Tier.HOST, A100) == pytest.approx(nbytes / A100.host_bandwidth)
    assert load_seconds(nbytes, Tier.DISK, A100) == pytest.approx(nbytes / A100.disk_bandwidth)
    assert load_seconds(nbytes, Tier.REMOTE, A100) > load_seconds(nbytes, Tier.DISK, A100)
    # From host memory each GPU pulls its own shard over its own link; the shared disk does not speed up.
    assert load_seconds(nbytes, Tier.HOST, A100, tp=4) == pytest.approx(nbytes / 4 / A100.host_bandwidth)
    assert load_seconds(nbytes, Tier.DISK, A100, tp=4) == load_seconds(nbytes, Tier.DISK, A100)
    assert load_seconds(0, Tier.REMOTE, A100) == 0.0


def test_promotion_is_flat_and_far_cheaper_than_a_cold_start() -> None:
    for gpu in GPU_PROFILES.values():
        for shape in MODEL_SHAPES.values():
            cold = cold_start_seconds(shape, gpu, 1, Tier.HOST)
            assert cold == engine_start_seconds(gpu) + load_seconds(shape.weight_bytes, Tier.HOST, gpu)
            assert promotion_seconds(gpu) < cold / 100


def test_unknown_names_list_the_accepted_ones() -> None:
    with pytest.raises(InvalidFieldError) as gpu_err:
        gpu_profile("v100")
    assert gpu_err.value.field == "gpu" and "a100" in gpu_err.value.expected and gpu_err.value.got == "v100"
    with pytest.raises(InvalidFieldError) as model_err:
        model_shape("gpt-4", field="spec.shape")
    assert model_err.value.field == "spec.shape" and "llama3-8b" in model_err.value.expected


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: prefill_seconds(LLAMA2_7B, A100, 1, 0), "prefill_tokens[0]"),
        (lambda: prefill_seconds(LLAMA2_7B, A100, 0, 5), "tp"),
        (lambda: decode_step_seconds(LLAMA2_7B, A100, 1, 0, 5), "batch"),
        (lambda: decode_step_seconds(LLAMA2_7B, A100, 1, 4, 3), "context_tokens"),
        (lambda: load_seconds(-1, Tier.DISK, A100), "nbytes"),
        (
            lambda: iteration_seconds(LLAMA2_7B, A100, 1, Iteration(decode_contexts=(3, -1))),
            "decode_contexts[1]",
        ),
    ],
)
def test_bad_arguments_name_the_field(call: object, field: str) -> None:
    with pytest.raises(InvalidFieldError) as err:
        call()  # type: ignore[operator]
    assert err.value.field == field


def test_shape_from_a_hugging_face_config() -> None:
    config = {
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "num_hidden_layers": 32,
    }
    shape = shape_from_config("llama3-8b", config, 8_030_261_248, 2)
    assert shape == MODEL_SHAPES["llama3-8b"]
    assert shape_from_config("mha", {**config, "num_key_value_heads": None}, 1, 2).kv_heads == 32
    with pytest.raises(InvalidFieldError) as err:
        shape_from_config("x", json.loads('{"hidden_size": "big"}'), 1, 2)
    assert err.value.field == "config.hidden_size"


def test_a_spec_is_costed_by_its_named_shape_or_its_own_numbers() -> None:
    named = ModelSpec("m", "/w", 1, engine_args={"shape": "llama2-13b"})
    assert shape_for_spec(named) == MODEL_SHAPES["llama2-13b"]
    own = shape_for_spec(ModelSpec("m", "/w", LLAMA2_7B.weight_bytes, kv_bytes_per_token=524_288))
    assert (own.weight_bytes, own.kv_bytes_per_token) == (
        LLAMA2_7B.weight_bytes,
        LLAMA2_7B.kv_bytes_per_token,
    )
    # The same bytes moved per step as the real shape, so the same memory-bound decode time.
    assert decode_step_seconds(own, A100, 1, 1, 100) == pytest.approx(
        decode_step_seconds(LLAMA2_7B, A100, 1, 1, 100)
    )
    with pytest.raises(InvalidFieldError) as err:
        shape_for_spec(ModelSpec("m", "/w", 1), field="models.m")
    assert err.value.field == "models.m.kv_bytes_per_token"
    with pytest.raises(InvalidFieldError) as unknown:
        shape_for_spec(ModelSpec("m", "/w", 1, engine_args={"shape": "nope"}), field="models.m")
    assert unknown.value.field == "models.m.engine_args.shape"
