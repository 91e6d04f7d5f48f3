"""What ``warmserve local`` runs: the fake-GPU workers, the models on them, and what a request costs.

Everything the scheduler, the workers and the gateway must agree on is derived here from one
:class:`LocalSetup`, so they cannot disagree: each model's spec (a registered Llama shape; weights are
never read by the fake engine), its B, its cold-start cost as the fake engine will play it (``tier`` and
``speed``), and the mean latency of one replay request (prefill plus ``max_tokens`` decode steps at batch
one) that turns forecast rates into concurrency.

Trace models are mapped to shapes in a fixed order, by name: with the shipped sample ``m-large``,
``m-mid`` and ``m-small`` get ``llama2-13b``, ``llama3-8b`` and ``llama2-7b``; further models cycle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from warmserve.operator.snapshot import ModelConfig
from warmserve.worker.errors import InvalidFieldError
from warmserve.worker.protocol import ModelSpec
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
#: Prompt tokens of a replay request (:data:`warmserve.operator.local.client.PROMPT`, about).
PROMPT_TOKENS = 12


@dataclass(frozen=True, slots=True)
class LocalSetup:
    """The local cluster: ``workers`` × ``gpus`` fake GPUs of ``gpu_memory_gib`` each on ``profile``.

    ``speed`` multiplies every delay of the fake engine (1 = the profile's real time). ``slo_s`` is the
    TTFT target of every model; ``max_concurrency`` is B.
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

    def __post_init__(self) -> None:
        if not self.models:
            raise InvalidFieldError("models", "at least one model", ())
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
        """Seconds the fake engine takes to load one replica's weights (its cold start)."""
        spec = self.spec(model)
        return load_seconds(spec.weight_bytes, self.tier, self.gpu, spec.tensor_parallel) * self.speed

    def model_configs(self) -> dict[str, ModelConfig]:
        """The scheduler's view of every model; load bandwidth as the fake engine plays it."""
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
        shape = model_shape(self.shape_name(model))
        prefill = prefill_seconds(shape, self.gpu, 1, PROMPT_TOKENS)
        decode = sum(
            decode_step_seconds(shape, self.gpu, 1, 1, PROMPT_TOKENS + i) for i in range(1, self.max_tokens)
        )
        return max((prefill + decode) * self.speed, 1e-6)

    def latencies(self) -> Mapping[str, float]:
        return {m: self.latency_s(m) for m in self.models}


def default_models(trace_models: Sequence[str], limit: int = len(SHAPES)) -> tuple[str, ...]:
    """The trace's models to serve, in name order, at most ``limit``."""
    return tuple(sorted(trace_models)[:limit])
