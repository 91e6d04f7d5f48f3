"""The one interface every engine (fake, torch, vllm) offers the worker's replica manager.

Life of a replica on an engine::

    prepared = await engine.prepare(spec, weights, layout)   # prewarm: build the model around the slot
    instance = await engine.promote(prepared, kv, kv_bytes)  # serve: KV space after the weights
    async for event in instance.generate(request): ...       # stream tokens; closing the stream cancels
    prepared = await engine.demote(instance)                 # KV given back, weights untouched

``weights`` is the slot's weight region as a flat ``uint8`` tensor and ``layout`` says where each tensor
sits in it; an engine that builds a real model uses views of those bytes (zero copy), so promotion costs
no weight copy. ``kv`` is the KV region (``uint8``, ``kv_bytes`` long) or ``None`` when the engine should
allocate it itself (CPU) or only account for it (fake). Bad input raises :class:`InvalidFieldError`
naming the field; using a demoted instance or demoting a busy one raises :class:`UnavailableError`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import ModelSpec
from warmserve.worker.layout import WeightLayout

if TYPE_CHECKING:  # imported by the functions that make tensors: a fake-GPU worker runs without torch
    import torch

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """One generation: a prompt (text, or token ids) and how to sample its continuation.

    ``temperature`` 0 is greedy; otherwise sampling is reproducible for a given ``seed``. Generation
    ends at ``max_tokens``, at the model's end-of-sequence token (unless ``ignore_eos``), or when the text
    contains one of ``stop`` (the stop string itself is not returned).
    """

    prompt: str | tuple[int, ...]
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if not self.prompt:
            raise InvalidFieldError("prompt", "a non-empty text or list of token ids", self.prompt)
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InvalidFieldError("max_tokens", "an integer >= 1", self.max_tokens)
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidFieldError("temperature", "a number in [0, 2]", self.temperature)
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidFieldError("top_p", "a number in (0, 1]", self.top_p)
        if any(not s for s in self.stop):
            raise InvalidFieldError("stop", "non-empty strings", self.stop)


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """One generated token as streamed: ``text`` is what it adds to the completion (may be empty).

    The last event of a stream has ``finish_reason`` set; ``index`` counts tokens from 0.
    """

    token_id: int
    text: str
    index: int
    prompt_tokens: int
    finish_reason: FinishReason | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A prewarmed replica on an engine: what it needs to be promoted, and its memory needs."""

    spec: ModelSpec
    weight_bytes: int
    kv_bytes_per_token: int


class Instance(abc.ABC):
    """A serving replica. Not thread-safe: use it from the event loop it was promoted on."""

    prepared: Prepared

    @abc.abstractmethod
    def generate(self, request: GenerateRequest) -> AsyncIterator[TokenEvent]:
        """Stream the tokens of one request; closing the iterator early cancels it and frees its KV."""

    @property
    @abc.abstractmethod
    def inflight(self) -> int:
        """Requests accepted and not finished (running and waiting for a batch place or KV space)."""

    @property
    @abc.abstractmethod
    def kv_used_bytes(self) -> int:
        """KV bytes reserved by the running requests."""

    @property
    @abc.abstractmethod
    def kv_total_bytes(self) -> int:
        """The instance's whole KV space."""

    def resize_kv(self, kv_bytes: int) -> bool:
        """Use only the first ``kv_bytes`` of the KV space from now on (the rest is lent, or given back).

        True if done; False, changing nothing, if live sequences use bytes beyond ``kv_bytes`` or the
        engine cannot resize a live instance (the default).
        """
        return False


class Engine(abc.ABC):
    """Builds replicas and switches them between prewarmed and serving."""

    name: str

    @abc.abstractmethod
    async def prepare(
        self, spec: ModelSpec, weights: torch.Tensor | None, layout: WeightLayout | None
    ) -> Prepared:
        """Build the replica around weights already in the slot (prewarm time, so promotion is cheap)."""

    @abc.abstractmethod
    async def promote(self, prepared: Prepared, kv: torch.Tensor | None, kv_bytes: int) -> Instance:
        """Start serving with ``kv_bytes`` of KV space (``kv``, or the engine's own when ``None``)."""

    @abc.abstractmethod
    async def demote(self, instance: Instance) -> Prepared:
        """Stop serving a drained instance: its KV is released, its weights stay where they are."""


def next_piece(
    emitted: str, text: str, request: GenerateRequest, count: int, eos: bool
) -> tuple[str, FinishReason | None]:
    """What a new token adds to a stream, and why the stream ends with it, if it does.

    ``text`` is the completion so far including the new token, ``emitted`` what was already streamed,
    ``count`` the tokens generated including this one, ``eos`` whether it is the end-of-sequence token.
    A stop string ends the stream and is cut off. While stop strings are set, the last ``len(longest) -
    1`` characters are held back until the stream ends, so a stop string that spans tokens is never
    partly streamed.
    """
    found = [i for i in (text.find(s) for s in request.stop) if i >= 0]
    if found:
        return text[len(emitted) : max(min(found), len(emitted))], "stop"
    finish: FinishReason | None = None
    if eos and not request.ignore_eos:
        finish = "stop"
    elif count >= request.max_tokens:
        finish = "length"
    end = len(text)
    if finish is None and request.stop:
        end = max(end - max(len(s) for s in request.stop) + 1, len(emitted))
    return text[len(emitted) : end], finish


def check_token_ids(prompt: tuple[int, ...], vocab: int) -> None:
    """Refuse a prompt of token ids with one outside the engine's vocabulary ``[0, vocab)``, naming it."""
    for i, token in enumerate(prompt):
        if not 0 <= token < vocab:
            raise InvalidFieldError(f"prompt[{i}]", f"a token id in [0, {vocab})", token)


def check_kv_region(kv: torch.Tensor | None, kv_bytes: int) -> None:
    """Refuse a KV region that is not a flat ``uint8`` tensor of at least ``kv_bytes`` bytes."""
    if isinstance(kv_bytes, bool) or not isinstance(kv_bytes, int) or kv_bytes < 1:
        raise InvalidFieldError("kv_bytes", "a positive byte count", kv_bytes)
    if kv is None:
        return
    import torch  # loaded already: ``kv`` is a tensor

    if kv.dtype != torch.uint8 or kv.dim() != 1 or kv.numel() < kv_bytes:
        raise InvalidFieldError(
            "kv", f"a flat uint8 tensor of >= {kv_bytes} bytes", f"{kv.dtype}{tuple(kv.shape)}"
        )
