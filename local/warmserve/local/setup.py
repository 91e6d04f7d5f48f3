"""What ``warmserve local`` runs: the workers, the models on them, and what a request costs.

Everything the scheduler, the workers and the gateway must agree on is derived here from one
:class:`LocalSetup`, so they cannot disagree: each model's spec, its B, its cold-start cost, and the mean
latency of one replay request alone on an instance, which turns forecast rates into concurrency.

- ``engine="fake"``: fake GPUs. Trace models get registered Llama shapes in a fixed order, by name (with
  the shipped sample ``m-large``, ``m-mid`` and ``m-small`` get ``llama2-13b``, ``llama3-8b`` and
  ``llama2-7b``; further models cycle); weights are never read; cold start and latency are the fake
  engine's timing model (``tier``, ``profile``, ``speed``).
- ``engine="torch"`` or ``"vllm"``: real tiny checkpoints (:mod:`.checkpoints`) on the CPU. Specs carry
  their real sizes; a cold start is the weight copy at :data:`CPU_LOAD_BYTES_PER_S` plus the engine's
  set-up (:data:`ENGINE_PREPARE_S`), and a request costs one forward per token (prefill included) of
  :data:`CPU_FORWARD_S` plus reading the weights once at :data:`CPU_READ_BYTES_PER_S`. These are
  estimates measured on a 2-core x86 CPU (Nov 2026; tiny models at batch one, one thread) and feed
  only the forecasts' Little's law and the forecast horizon; what the run measures is real.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from warmserve.local.checkpoints import Checkpoint
from warmserve.local.client import PROMPT
from warmserve.operator.planning.snapshot import ModelConfig
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import ModelSpec
from warmserve.worker.timing import (
    GpuProfile,
    Tier,
    decode_step_seconds,
    gpu_profile,
    load_seconds,
    model_shape,
    prefill_seconds,
)

GIB = 1 << 30
#: Shapes given to the trace's models, in name order (see the module docstring).
SHAPES = ("llama2-13b", "llama3-8b", "llama2-7b")
#: Prompt tokens of a replay request as the fake engine counts them: one per word of the client's prompt
#: (a real engine's tokenizer gives about as many).
PROMPT_TOKENS = len(PROMPT.split())
#: Worker engines ``warmserve local`` can run.
ENGINES = ("fake", "torch", "vllm")
#: Bytes per second the worker's store copies weights from the page cache into a host slot
#: (docs/memory-pool.md: 0.6-1.3 GB/s for a first load, page faults included).
CPU_LOAD_BYTES_PER_S = 1e9
#: Seconds an engine takes to set a loaded replica up: the torch engine builds the transformers model
#: around the slot and loads the tokenizer (0.2-0.5 s here); vLLM starts a whole engine (≈ 100 s here, for
#: one engine alone: ``tests/worker/test_vllm_cpu.py`` took 116 s, its generation included).
ENGINE_PREPARE_S: Mapping[str, float] = {"torch": 0.5, "vllm": 100.0}
#: Fixed seconds of one batch-one forward of a tiny model (Python and kernel launch overhead, ≈ 2 ms here).
CPU_FORWARD_S = 2e-3
#: Bytes per second a forward streams the weights at (memory-bound matrix-vector products, ≈ 3 GB/s here).
CPU_READ_BYTES_PER_S = 3e9


@dataclass(frozen=True, slots=True)
class LocalSetup:
    """The local cluster: ``workers`` × ``gpus`` (fake) GPUs, each a pool of ``gpu_memory_gib``.

    ``speed`` multiplies every delay of the fake engine (1 = the profile's real time). ``slo_s`` is the
    TTFT target of every model; ``max_concurrency`` is B. A real ``engine`` (torch, vllm) needs a
    checkpoint for every model in ``checkpoints``; ``worker_python`` is the interpreter the workers run
    (None: this one; vllm runs in its own venv).
    """

    models: tuple[str, ...]
    workers: int = 2
    gpus: int = 2
    gpu_memory_gib: int = 40
    profile: str = "h100"
    tier: Tier = Tier.DISK
    speed: float = 1.0
    max_concurrency: int = 8
    max_tokens: int = 16
    slo_s: float = 1.0
    tick_s: float = 0.5
    engine: str = "fake"
    checkpoints: Mapping[str, Checkpoint] = field(default_factory=dict)
    worker_python: Path | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise InvalidFieldError("models", "at least one model", ())
        if self.engine not in ENGINES:
            raise InvalidFieldError("engine", f"one of {list(ENGINES)}", self.engine)
        missing = [m for m in self.models if m not in self.checkpoints]
        if self.engine != "fake" and missing:
            raise InvalidFieldError("checkpoints", f"a checkpoint for every model ({self.engine})", missing)
        for name in ("workers", "gpus", "gpu_memory_gib", "max_concurrency", "max_tokens"):
            if getattr(self, name) < 1:
                raise InvalidFieldError(name, "an integer >= 1", getattr(self, name))
        for name in ("slo_s", "tick_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise InvalidFieldError(name, "a finite number > 0", getattr(self, name))
        if not (math.isfinite(self.speed) and self.speed >= 0):
            raise InvalidFieldError("speed", "a finite number >= 0 (0 = no delays)", self.speed)
        gpu_profile(self.profile, "profile")

    @property
    def gpu(self) -> GpuProfile:
        return gpu_profile(self.profile, "profile")

    def shape_name(self, model: str) -> str:
        return SHAPES[sorted(self.models).index(model) % len(SHAPES)]

    def spec(self, model: str) -> ModelSpec:
        if self.engine != "fake":
            real = self.checkpoints[model]
            return ModelSpec(
                name=model,
                weights=str(real.path),
                weight_bytes=real.weight_bytes,
                kv_bytes_per_token=real.kv_bytes_per_token,
                max_concurrency=self.max_concurrency,
            )
        shape = model_shape(self.shape_name(model))
        return ModelSpec(
            name=model,
            weights=f"fake://{shape.name}",
            weight_bytes=shape.weight_bytes,
            kv_bytes_per_token=shape.kv_bytes_per_token,
            max_concurrency=self.max_concurrency,
            engine_args={"shape": shape.name},
        )

    def load_s(self, model: str) -> float:
        """Seconds one replica takes to load and be ready to promote (its cold start)."""
        spec = self.spec(model)
        if self.engine != "fake":
            return spec.weight_bytes / CPU_LOAD_BYTES_PER_S + ENGINE_PREPARE_S[self.engine]
        return load_seconds(spec.weight_bytes, self.tier, self.gpu, spec.tensor_parallel) * self.speed

    def model_configs(self) -> dict[str, ModelConfig]:
        """The scheduler's view of every model; load bandwidth such that a load lasts :meth:`load_s`."""
        out = {}
        for m in self.models:
            spec = self.spec(m)
            seconds = max(self.load_s(m), 1e-6)
            out[m] = ModelConfig(
                spec, load_bandwidth_bytes_per_s=spec.shard_bytes / seconds, slo_ttft_s=self.slo_s
            )
        return out

    def latency_s(self, model: str) -> float:
        """Mean seconds of one replay request alone on an instance (prefill + decode at batch one)."""
        if self.engine != "fake":
            forward = CPU_FORWARD_S + self.spec(model).weight_bytes / CPU_READ_BYTES_PER_S
            return forward * self.max_tokens  # the prefill's forward yields the first token
        shape = model_shape(self.shape_name(model))
        prefill = prefill_seconds(shape, self.gpu, 1, PROMPT_TOKENS)
        decode = sum(
            decode_step_seconds(shape, self.gpu, 1, 1, PROMPT_TOKENS + i) for i in range(1, self.max_tokens)
        )
        return max((prefill + decode) * self.speed, 1e-6)

    def hold_timeout_s(self, floor_s: float) -> float:
        """How long the gateway holds a request for lack of an instance: ``floor_s``, or twice the
        slowest cold start if longer (a vLLM engine starting on a CPU), so that a request arriving at a
        model with no instance can outlast the cold start it triggers."""
        return max(floor_s, 2 * max(self.load_s(m) for m in self.models))

    def latencies(self) -> Mapping[str, float]:
        return {m: self.latency_s(m) for m in self.models}


def default_models(trace_models: Sequence[str], limit: int = len(SHAPES)) -> tuple[str, ...]:
    """The trace's models to serve, in name order, at most ``limit``."""
    return tuple(sorted(trace_models)[:limit])
