"""The timing model: how long loading, promotion, prefill and decode take, as pure functions.

One model shared by the worker's ``fake`` engine and the simulator, so that both behave the same. Every
cost is a *roofline*: a step takes the longer of its compute time (FLOPs / peak FLOP/s) and its memory time
(bytes moved / memory bandwidth), plus a fixed per-step overhead. Tensor parallelism divides both the FLOPs
and the bytes of a step across ``tp`` GPUs (communication is not modelled). Continuous batching is modelled
one engine *iteration* at a time: sequences that join in an iteration are prefilled in it and emit their
first token at its end; running sequences each decode one token (see :class:`Iteration`).

The public GPU and model numbers, and how the ``cpu`` profile was measured, are in ``docs/timing-model.md``.
Unknown profile or model names raise :class:`InvalidFieldError` listing the accepted names; nonsensical
arguments (negative tokens, ``tp`` < 1) raise it too, naming the argument.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import ModelSpec

GB = 1e9
TFLOPS = 1e12


class Tier(enum.StrEnum):
    """Where weights are loaded from into a slot."""

    HOST = "host"  # node DRAM (the model store's page cache): bounded by the host→GPU link
    DISK = "disk"  # node-local disk
    REMOTE = "remote"  # network storage


@dataclass(frozen=True, slots=True)
class GpuProfile:
    """One accelerator of a node kind, with the node's load paths and engine start-up time.

    ``peak_flops`` is dense fp16/bf16 tensor throughput; ``memory_bandwidth`` the device memory's;
    ``host_bandwidth`` host DRAM → device per GPU (PCIe, one direction); ``disk_bandwidth`` and
    ``remote_bandwidth`` are per node, shared by the GPUs loading at once.
    """

    name: str
    peak_flops: float
    memory_bandwidth: float
    memory_bytes: int
    host_bandwidth: float
    disk_bandwidth: float
    remote_bandwidth: float
    step_overhead_s: float  # fixed cost of one engine iteration (kernel launches, scheduling, Python)
    promotion_s: float  # prewarmed → serving: adopt the slot's weights in place, map the first KV chunk
    engine_start_s: float  # process start + engine init, excluding the weight load


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The shape of a decoder-only transformer, enough to cost its steps and size its memory."""

    name: str
    params: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 2

    @property
    def weight_bytes(self) -> int:
        """All weights of one replica (over all tensor-parallel shards)."""
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """Keys and values of every layer for one token (over all shards)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def attention_flops(self, context_tokens: int) -> float:
        """FLOPs of one query token attending to ``context_tokens`` keys (QKᵀ and AV, every layer)."""
        return 4.0 * self.layers * self.heads * self.head_dim * context_tokens


@dataclass(frozen=True, slots=True)
class Iteration:
    """One engine iteration of continuous batching.

    ``prefill_tokens``: prompt length of each sequence joining in this iteration (each emits its first
    token at the end of it). ``decode_contexts``: the context length (prompt + generated so far) of each
    running sequence, each of which decodes one token. The batch is ``len(prefill_tokens) +
    len(decode_contexts)`` and must not exceed the instance's cap B (the caller's rule).
    """

    prefill_tokens: tuple[int, ...] = ()
    decode_contexts: tuple[int, ...] = ()


def iteration_seconds(shape: ModelShape, gpu: GpuProfile, tp: int, iteration: Iteration) -> float:
    """Seconds one iteration takes: ``max(compute, memory) + overhead``; 0 for an empty iteration.

    Compute: ``2·params`` FLOPs per processed token plus causal attention. Memory: the weights are read
    once per iteration; decoding reads each sequence's KV; every processed token writes its KV.
    """
    _check_positive(tp, "tp")
    for i, n in enumerate(iteration.prefill_tokens):
        _check_positive(n, f"prefill_tokens[{i}]")
    for i, n in enumerate(iteration.decode_contexts):
        _check_positive(n, f"decode_contexts[{i}]")
    if not iteration.prefill_tokens and not iteration.decode_contexts:
        return 0.0
    new_tokens = sum(iteration.prefill_tokens) + len(iteration.decode_contexts)
    # Causal prefill of n tokens: token i attends to i keys, n(n+1)/2 in all.
    attended = sum(n * (n + 1) // 2 for n in iteration.prefill_tokens) + sum(iteration.decode_contexts)
    flops = 2.0 * shape.params * new_tokens + shape.attention_flops(attended)
    kv_read = sum(iteration.decode_contexts) * shape.kv_bytes_per_token
    kv_write = new_tokens * shape.kv_bytes_per_token
    moved = shape.weight_bytes + kv_read + kv_write
    return max(flops / gpu.peak_flops, moved / gpu.memory_bandwidth) / tp + gpu.step_overhead_s


def prefill_seconds(shape: ModelShape, gpu: GpuProfile, tp: int, tokens: int) -> float:
    """Seconds to prefill one prompt of ``tokens`` tokens alone (its time to first token on an idle GPU)."""
    return iteration_seconds(shape, gpu, tp, Iteration(prefill_tokens=(tokens,)))


def decode_step_seconds(
    shape: ModelShape, gpu: GpuProfile, tp: int, batch: int, context_tokens: int
) -> float:
    """Seconds for ``batch`` sequences to decode one token each, ``context_tokens`` of context in all.

    The total context is spread evenly over the batch (the cost only depends on the sum).
    """
    _check_positive(batch, "batch")
    if context_tokens < batch:
        raise InvalidFieldError(
            "context_tokens", f"at least one token per sequence (>= {batch})", context_tokens
        )
    contexts = tuple(context_tokens // batch + (1 if i < context_tokens % batch else 0) for i in range(batch))
    return iteration_seconds(shape, gpu, tp, Iteration(decode_contexts=contexts))


def load_seconds(nbytes: int, tier: Tier, gpu: GpuProfile, tp: int = 1) -> float:
    """Seconds to copy ``nbytes`` of weights from ``tier`` into the slots of ``tp`` GPUs.

    The source is read once (shared by the node) while each GPU takes its shard over its own host link;
    the two overlap, so the slower one decides.
    """
    _check_positive(tp, "tp")
    if nbytes < 0:
        raise InvalidFieldError("nbytes", "a byte count >= 0", nbytes)
    source = {Tier.HOST: float("inf"), Tier.DISK: gpu.disk_bandwidth, Tier.REMOTE: gpu.remote_bandwidth}[tier]
    shard = -(-nbytes // tp)
    return max(nbytes / source, shard / gpu.host_bandwidth)


def promotion_seconds(gpu: GpuProfile) -> float:
    """Seconds to turn a prewarmed replica into a serving one: flat in model size (zero copy)."""
    return gpu.promotion_s


def engine_start_seconds(gpu: GpuProfile) -> float:
    """Seconds to start an engine process before any weight is loaded (part of every cold start)."""
    return gpu.engine_start_s


def cold_start_seconds(shape: ModelShape, gpu: GpuProfile, tp: int, tier: Tier) -> float:
    """A scale-out with no prewarmed replica: engine start, then the full weight load."""
    return engine_start_seconds(gpu) + load_seconds(shape.weight_bytes, tier, gpu, tp)


# --- registries ---------------------------------------------------------------------------------------

#: Public datasheet numbers (docs/timing-model.md cites them). The per-step overhead, promotion and
#: engine start-up of the GPU profiles are assumptions stated there, not measurements.
GPU_PROFILES: Mapping[str, GpuProfile] = {
    "h100": GpuProfile(
        name="h100",
        peak_flops=989 * TFLOPS,
        memory_bandwidth=3350 * GB,
        memory_bytes=80 * 2**30,
        host_bandwidth=64 * GB,
        disk_bandwidth=7 * GB,
        remote_bandwidth=1.25 * GB,
        step_overhead_s=0.002,
        promotion_s=0.005,
        engine_start_s=20.0,
    ),
    "a100": GpuProfile(
        name="a100",
        peak_flops=312 * TFLOPS,
        memory_bandwidth=2039 * GB,
        memory_bytes=80 * 2**30,
        host_bandwidth=32 * GB,
        disk_bandwidth=7 * GB,
        remote_bandwidth=1.25 * GB,
        step_overhead_s=0.002,
        promotion_s=0.005,
        engine_start_s=20.0,
    ),
    # Measured by bench/measure_cpu_profile.py on a 2-core x86 CPU (2026-11-24; docs/timing-model.md): fp32
    # 1024² matmuls on 2 threads; a 512 MiB tensor copy (memory: read + write; host: bytes copied); a 256 MiB
    # file read after POSIX_FADV_DONTNEED; the torch engine's decode step of the default tiny model (all
    # overhead: its bytes and FLOPs are negligible) and its promotion; a fresh process importing torch and
    # transformers and loading the tiny model. The first four at load average 0.4, the last three while other
    # jobs kept the load near 6 (start-up varied 5-18 s). Not measured (no network to measure): remote, taken
    # as 10 Gb/s. Re-run the script on another machine and replace these numbers.
    "cpu": GpuProfile(
        name="cpu",
        peak_flops=73 * 1e9,
        memory_bandwidth=9.4 * GB,
        memory_bytes=24 * 2**30,
        host_bandwidth=4.7 * GB,
        disk_bandwidth=2.1 * GB,
        remote_bandwidth=1.25 * GB,
        step_overhead_s=0.0016,
        promotion_s=0.00002,
        engine_start_s=10.0,
    ),
}

#: Public configurations of the Llama family (their config.json on the model cards), fp16 weights.
MODEL_SHAPES: Mapping[str, ModelShape] = {
    "llama2-7b": ModelShape("llama2-7b", 6_738_415_616, 32, 4096, 32, 32, 128),
    "llama2-13b": ModelShape("llama2-13b", 13_015_864_320, 40, 5120, 40, 40, 128),
    "llama2-70b": ModelShape("llama2-70b", 68_976_648_192, 80, 8192, 64, 8, 128),
    "llama3-8b": ModelShape("llama3-8b", 8_030_261_248, 32, 4096, 32, 8, 128),
}


def gpu_profile(name: str, field: str = "gpu") -> GpuProfile:
    """The GPU profile called ``name``; an unknown name raises :class:`InvalidFieldError` on ``field``."""
    if name not in GPU_PROFILES:
        raise InvalidFieldError(field, f"one of {sorted(GPU_PROFILES)}", name)
    return GPU_PROFILES[name]


def model_shape(name: str, field: str = "model") -> ModelShape:
    """The model shape called ``name``; an unknown name raises :class:`InvalidFieldError` on ``field``."""
    if name not in MODEL_SHAPES:
        raise InvalidFieldError(field, f"one of {sorted(MODEL_SHAPES)}", name)
    return MODEL_SHAPES[name]


def shape_for_spec(spec: ModelSpec, field: str = "spec") -> ModelShape:
    """The shape the fake engine and the simulator cost a deployed model with.

    ``engine_args["shape"]`` names a registered shape. Without it, a shape equivalent for costing is made
    from the spec's own numbers: ``weight_bytes / 2`` fp16 parameters and one attention layer whose KV
    bytes per token are the spec's (attention FLOPs then match a multi-head model of that KV size). A spec
    with neither raises :class:`InvalidFieldError` on ``{field}.kv_bytes_per_token``.
    """
    if "shape" in spec.engine_args:
        return model_shape(spec.engine_args["shape"], f"{field}.engine_args.shape")
    if spec.kv_bytes_per_token < 4 or spec.kv_bytes_per_token % 4:
        raise InvalidFieldError(
            f"{field}.kv_bytes_per_token",
            "a positive multiple of 4 (or engine_args.shape naming a known shape)",
            spec.kv_bytes_per_token,
        )
    head_dim = spec.kv_bytes_per_token // 4  # keys + values, 2 bytes each
    return ModelShape(spec.name, max(spec.weight_bytes // 2, 1), 1, head_dim, 1, 1, head_dim)


def shape_from_config(name: str, config: Mapping[str, object], params: int, dtype_bytes: int) -> ModelShape:
    """A shape from a Hugging Face ``config.json`` (Llama/Qwen keys) and the checkpoint's parameter count.

    Missing ``num_key_value_heads`` means plain multi-head attention; missing ``head_dim`` means
    ``hidden_size / num_attention_heads``. Any other missing or non-integer key raises
    :class:`InvalidFieldError` naming it.
    """
    hidden = _config_int(config, "hidden_size")
    heads = _config_int(config, "num_attention_heads")
    return ModelShape(
        name=name,
        params=params,
        layers=_config_int(config, "num_hidden_layers"),
        hidden=hidden,
        heads=heads,
        kv_heads=_config_int(config, "num_key_value_heads", default=heads),
        head_dim=_config_int(config, "head_dim", default=hidden // heads),
        dtype_bytes=dtype_bytes,
    )


def _config_int(config: Mapping[str, object], key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if value is None and default is not None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidFieldError(f"config.{key}", "a positive integer", value)
    return value


def _check_positive(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidFieldError(name, "a positive integer", value)
