"""The ``fake`` engine: fake-GPU mode on the timing model the simulator uses.

No model runs and no memory is touched: weights are never read, KV is accounting only (bytes per token ×
reserved tokens), tokens are synthetic (``" w<id>"``, reproducible for a seed). What is real is the time:
prepare (the weight load, when no store loaded them), promotion, and every continuous-batching iteration
sleep as long as :mod:`warmserve.worker.timing` predicts, multiplied by ``speed`` (1 = real time, 0.01 =
100× faster, 0 = no delays). The cap B and KV admission are the torch engine's (:mod:`.batching`).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import ModelSpec
from warmserve.worker.engines.base import (
    Engine,
    GenerateRequest,
    Instance,
    Prepared,
    TokenEvent,
    check_kv_region,
    check_token_ids,
    next_piece,
)
from warmserve.worker.engines.batching import BatchingInstance, Sequence
from warmserve.worker.layout import WeightLayout
from warmserve.worker.timing import (
    GpuProfile,
    Iteration,
    ModelShape,
    Tier,
    iteration_seconds,
    load_seconds,
    promotion_seconds,
    shape_for_spec,
)

if TYPE_CHECKING:  # annotations only: a fake-GPU worker runs without torch
    import torch

FAKE_VOCAB = 1000


@dataclass(frozen=True, slots=True)
class FakePrepared(Prepared):
    shape: ModelShape


@dataclass(eq=False)
class _FakeSequence(Sequence):
    rng: random.Random = field(default_factory=random.Random)
    text: str = ""
    emitted: str = ""


class FakeInstance(BatchingInstance[_FakeSequence]):
    """Serves synthetic tokens at the pace the timing model predicts."""

    def __init__(self, prepared: FakePrepared, engine: FakeEngine, kv_bytes: int) -> None:
        super().__init__(prepared, kv_bytes, prepared.spec.max_concurrency)
        self._shape = prepared.shape
        self._engine = engine

    def _open(self, request: GenerateRequest) -> _FakeSequence:
        # A text prompt counts one token per word: close enough for timing, and independent of any vocabulary.
        # Token ids are the fake vocabulary's, the one its output is drawn from.
        if isinstance(request.prompt, tuple):
            check_token_ids(request.prompt, FAKE_VOCAB)
            prompt_tokens = len(request.prompt)
        else:
            prompt_tokens = len(request.prompt.split())
        seed = request.seed if request.seed is not None else 0
        return _FakeSequence(request, max(prompt_tokens, 1), rng=random.Random(seed))

    async def _iterate(self, joining: list[_FakeSequence], decoding: list[_FakeSequence]) -> list[TokenEvent]:
        iteration = Iteration(
            prefill_tokens=tuple(s.prompt_tokens for s in joining),
            decode_contexts=tuple(s.prompt_tokens + s.generated for s in decoding),
        )
        engine = self._engine
        await engine.sleep(
            iteration_seconds(self._shape, engine.gpu, self.prepared.spec.tensor_parallel, iteration)
        )
        return [_next_token(seq) for seq in (*joining, *decoding)]


def _next_token(seq: _FakeSequence) -> TokenEvent:
    token = seq.rng.randrange(FAKE_VOCAB)
    seq.text += f" w{token}"
    piece, finish = next_piece(seq.emitted, seq.text, seq.request, seq.generated + 1, eos=False)
    seq.emitted += piece
    return TokenEvent(token, piece, seq.generated, seq.prompt_tokens, finish)


class FakeEngine(Engine):
    """Fake-GPU engine: ``gpu`` is the profile whose times it plays; weights come from ``tier``."""

    name = "fake"

    def __init__(self, gpu: GpuProfile, speed: float = 1.0, tier: Tier = Tier.HOST) -> None:
        if not speed >= 0.0:
            raise InvalidFieldError("speed", "a number >= 0", speed)
        self.gpu = gpu
        self.speed = speed
        self.tier = tier

    async def sleep(self, predicted_seconds: float) -> None:
        """Let ``predicted_seconds × speed`` pass (yield to the loop even when that is 0)."""
        await asyncio.sleep(predicted_seconds * self.speed)

    async def prepare(
        self, spec: ModelSpec, weights: torch.Tensor | None, layout: WeightLayout | None
    ) -> Prepared:
        """Cost the spec (:func:`shape_for_spec`); with no ``weights`` the load from ``tier`` is played."""
        shape = shape_for_spec(spec)
        if weights is None:
            await self.sleep(load_seconds(spec.weight_bytes, self.tier, self.gpu, spec.tensor_parallel))
        return FakePrepared(spec, spec.weight_bytes, shape.kv_bytes_per_token, shape)

    async def promote(self, prepared: Prepared, kv: torch.Tensor | None, kv_bytes: int) -> Instance:
        if not isinstance(prepared, FakePrepared):
            raise InvalidFieldError(
                "prepared", "a replica prepared by the fake engine", type(prepared).__name__
            )
        check_kv_region(kv, kv_bytes)
        await self.sleep(promotion_seconds(self.gpu))
        return FakeInstance(prepared, self, kv_bytes)

    async def demote(self, instance: Instance) -> Prepared:
        if not isinstance(instance, FakeInstance):
            raise InvalidFieldError("instance", "an instance of the fake engine", type(instance).__name__)
        instance.close()
        return instance.prepared
