"""The ``torch`` engine: a real transformers model whose weights and KV cache live in the slot.

``prepare`` builds the model from its ``config.json`` on the ``meta`` device (no memory), then makes every
parameter a view of the slot's bytes at the offset the :class:`WeightLayout` gives (zero copy; tied weights
share one view); non-persistent buffers (rotary frequencies) are computed. ``promote`` only sets up KV
accounting, so it costs the same for any model size. Each admitted sequence gets key/value tensors that
are views of its reserved range of the KV region, behind a transformers ``Cache`` (:class:`SlotCache`).

Continuous batching (cap B, :mod:`.batching`) runs *interleaved*: in each iteration every running
sequence does its own batch-1 forward (prefill for those that just joined, one decode step for the
others), one after the other, in a single worker thread so the event loop is never blocked. Sequences
of different lengths then need no padding, and a token's output is exactly what the model alone gives.
Works for any Llama/Qwen-family checkpoint transformers can build from its config.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from warmserve.protocol.errors import InvalidFieldError, InvalidInputError
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
from warmserve.worker.layout import TensorEntry, WeightLayout
from warmserve.worker.store import DTYPES, ModelStore, torch_dtype


class SlotLayer(CacheLayerMixin):  # type: ignore[no-untyped-call]  # transformers is untyped
    """One layer's keys and values in preallocated views (``[1, kv_heads, capacity, head_dim]``)."""

    is_sliding = False
    is_compileable = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._store = (keys, values)
        self.length = 0
        self.keys, self.values = keys[:, :, :0], values[:, :, :0]
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Nothing to allocate: the views exist from the start."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new tokens' keys/values after the cached ones; return all of them (views)."""
        keys, values = self._store
        end = self.length + key_states.shape[-2]
        if end > keys.shape[-2]:
            raise InvalidInputError(
                f"KV range overflow: {end} tokens in a range reserved for {keys.shape[-2]}"
            )
        keys[:, :, self.length : end].copy_(key_states)
        values[:, :, self.length : end].copy_(value_states)
        self.length = end
        self.keys, self.values = keys[:, :, :end], values[:, :, :end]
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return int(self._store[0].shape[-2])


class SlotCache(Cache):
    """A transformers ``Cache`` whose layers are :class:`SlotLayer` views of one KV range."""

    def __init__(self, region: torch.Tensor) -> None:
        """``region``: ``[layers, 2, 1, kv_heads, tokens, head_dim]`` (keys, then values, per layer)."""
        super().__init__(layers=[SlotLayer(layer[0], layer[1]) for layer in region])


@dataclass(frozen=True, slots=True)
class KvGeometry:
    """How one token's KV is laid out: ``layers × 2 × kv_heads × head_dim`` elements of ``dtype``."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype.itemsize

    def views(self, kv: torch.Tensor, offset: int, tokens: int) -> torch.Tensor:
        """The ``[layers, 2, 1, kv_heads, tokens, head_dim]`` view of ``tokens`` tokens at ``offset``."""
        raw = kv[offset : offset + tokens * self.bytes_per_token]
        return raw.view(self.dtype).view(self.layers, 2, 1, self.kv_heads, tokens, self.head_dim)


@dataclass(frozen=True, slots=True)
class TorchPrepared(Prepared):
    model: Any
    tokenizer: Any
    geometry: KvGeometry
    eos: frozenset[int]
    max_positions: int
    weights: torch.Tensor  # keeps the slot alive as long as the model views it


@dataclass(eq=False)
class _TorchSequence(Sequence):
    prompt_ids: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    cache: SlotCache | None = None
    generator: torch.Generator | None = None
    emitted: str = ""


class TorchInstance(BatchingInstance[_TorchSequence]):
    """Serves one prepared model; forwards run on the engine's single worker thread."""

    def __init__(
        self, prepared: TorchPrepared, kv: torch.Tensor, kv_bytes: int, executor: ThreadPoolExecutor
    ):
        super().__init__(prepared, kv_bytes, prepared.spec.max_concurrency)
        self.torch_prepared = prepared
        self.kv = kv
        self._executor = executor

    def _open(self, request: GenerateRequest) -> _TorchSequence:
        prepared = self.torch_prepared
        if isinstance(request.prompt, str):
            ids = list(prepared.tokenizer.encode(request.prompt))
        else:
            check_token_ids(request.prompt, prepared.model.config.get_text_config().vocab_size)
            ids = list(request.prompt)
        if len(ids) + request.max_tokens > prepared.max_positions:
            raise InvalidFieldError(
                "max_tokens",
                f"prompt ({len(ids)} tokens) + max_tokens <= {prepared.max_positions}",
                request.max_tokens,
            )
        generator = None
        if request.temperature > 0:
            generator = torch.Generator()
            if request.seed is None:
                generator.seed()
            else:
                generator.manual_seed(request.seed)
        return _TorchSequence(request, len(ids), prompt_ids=ids, generator=generator)

    def _admitted(self, seq: _TorchSequence) -> None:
        assert seq.kv is not None  # set by the scheduler before this hook
        geometry = self.torch_prepared.geometry
        seq.cache = SlotCache(geometry.views(self.kv, seq.kv.offset, seq.reserved_tokens))

    def _retired(self, seq: _TorchSequence) -> None:
        seq.cache = None

    async def _iterate(
        self, joining: list[_TorchSequence], decoding: list[_TorchSequence]
    ) -> list[TokenEvent]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._advance_all, [*joining, *decoding])

    @torch.inference_mode()
    def _advance_all(self, sequences: list[_TorchSequence]) -> list[TokenEvent]:
        return [self._advance(seq) for seq in sequences]

    def _advance(self, seq: _TorchSequence) -> TokenEvent:
        prepared = self.torch_prepared
        ids = seq.prompt_ids if not seq.tokens else seq.tokens[-1:]
        out = prepared.model(input_ids=torch.tensor([ids]), cache=seq.cache, use_cache=True, logits_to_keep=1)
        token = sample(out.logits[0, -1], seq.request, seq.generator)
        seq.tokens.append(token)
        text = prepared.tokenizer.decode(seq.tokens, skip_special_tokens=True)
        text = text.rstrip("\ufffd")  # an incomplete UTF-8 sequence: wait for the rest of its bytes
        piece, finish = next_piece(seq.emitted, text, seq.request, len(seq.tokens), token in prepared.eos)
        seq.emitted += piece
        return TokenEvent(token, piece, len(seq.tokens) - 1, seq.prompt_tokens, finish)


def sample(logits: torch.Tensor, request: GenerateRequest, generator: torch.Generator | None) -> int:
    """Greedy at temperature 0; otherwise a draw from the temperature-scaled, top-p-truncated softmax."""
    if request.temperature == 0 or generator is None:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / request.temperature, dim=-1)
    if request.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < request.top_p  # always keeps the first
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


class TorchEngine(Engine):
    """Real inference on CPU (or one GPU) with transformers; ``threads`` sets torch's intra-op threads."""

    name = "torch"

    def __init__(self, threads: int | None = None) -> None:
        torch.set_num_threads(threads or min(2, os.cpu_count() or 1))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch-engine")

    async def prepare(
        self, spec: ModelSpec, weights: torch.Tensor | None, layout: WeightLayout | None
    ) -> Prepared:
        """Build ``spec.weights`` (a checkpoint directory: config and tokenizer) around the slot's bytes.

        A slot that is not a flat ``uint8`` tensor, a layout entry outside it, or a model parameter with
        no matching entry (or another shape) raises :class:`InvalidFieldError` naming it.
        """
        if weights is None or layout is None:
            raise InvalidFieldError(
                "weights", "the slot's weights and their layout (the torch engine loads none)", None
            )
        if weights.dtype != torch.uint8 or weights.dim() != 1 or weights.numel() < layout.total_bytes:
            raise InvalidFieldError(
                "weights",
                f"a flat uint8 tensor of >= {layout.total_bytes} bytes",
                f"{weights.dtype}{tuple(weights.shape)}",
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _build, spec, weights, layout)

    async def promote(self, prepared: Prepared, kv: torch.Tensor | None, kv_bytes: int) -> Instance:
        if not isinstance(prepared, TorchPrepared):
            raise InvalidFieldError(
                "prepared", "a replica prepared by the torch engine", type(prepared).__name__
            )
        check_kv_region(kv, kv_bytes)
        region = kv if kv is not None else torch.empty(kv_bytes, dtype=torch.uint8)
        return TorchInstance(prepared, region, kv_bytes, self._executor)

    async def demote(self, instance: Instance) -> Prepared:
        if not isinstance(instance, TorchInstance):
            raise InvalidFieldError("instance", "an instance of the torch engine", type(instance).__name__)
        instance.close()
        instance.kv = torch.empty(0, dtype=torch.uint8)  # the KV region is the pool's again
        return instance.prepared


def _build(spec: ModelSpec, weights: torch.Tensor, layout: WeightLayout) -> TorchPrepared:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory = Path(spec.weights)
    if not (directory / "config.json").is_file():
        raise InvalidFieldError("spec.weights", "a checkpoint directory with a config.json", spec.weights)
    config = AutoConfig.from_pretrained(directory)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    _bind_parameters(model, weights, layout)
    _materialize_buffers(model, weights, layout)
    model.eval()
    text = config.get_text_config()
    heads = text.num_attention_heads
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    geometry = KvGeometry(
        layers=text.num_hidden_layers,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        dtype=dtype,
    )
    tokenizer = AutoTokenizer.from_pretrained(directory)
    eos = {tokenizer.eos_token_id, *_ids(text.eos_token_id)} - {None}
    return TorchPrepared(
        spec=spec,
        weight_bytes=layout.total_bytes,
        kv_bytes_per_token=geometry.bytes_per_token,
        model=model,
        tokenizer=tokenizer,
        geometry=geometry,
        eos=frozenset(eos),
        max_positions=getattr(text, "max_position_embeddings", None) or 1 << 30,
        weights=weights,
    )


def _ids(value: int | list[int] | None) -> list[int]:
    return [] if value is None else [value] if isinstance(value, int) else list(value)


def _bind_parameters(model: torch.nn.Module, weights: torch.Tensor, layout: WeightLayout) -> None:
    """Replace every (meta) parameter by a view of the slot; aliases of one tied parameter share it."""
    aliases: dict[int, list[tuple[torch.nn.Module, str, str]]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for attr, param in module._parameters.items():
            if param is not None:
                name = f"{module_name}.{attr}" if module_name else attr
                aliases.setdefault(id(param), []).append((module, attr, name))
    for group in aliases.values():
        names = [name for _, _, name in group]
        entry = next((layout.entries[n] for n in names if n in layout.entries), None)
        if entry is None:
            raise InvalidFieldError("layout", f"an entry for the model's parameter {names[0]!r}", "none")
        expected = tuple(getattr(group[0][0], group[0][1]).shape)
        view = torch.nn.Parameter(_view(weights, entry, expected), requires_grad=False)
        for module, attr, _ in group:
            module._parameters[attr] = view


def _materialize_buffers(model: torch.nn.Module, weights: torch.Tensor, layout: WeightLayout) -> None:
    """Saved buffers become slot views; the others (rotary frequencies) are computed by the model's init."""
    recompute = []
    for module_name, module in model.named_modules():
        for attr, buffer in module._buffers.items():
            if buffer is None or buffer.device.type != "meta":
                continue
            name = f"{module_name}.{attr}" if module_name else attr
            if name in layout.entries:
                module._buffers[attr] = _view(weights, layout.entries[name], tuple(buffer.shape))
            else:
                module._buffers[attr] = torch.empty_like(buffer, device="cpu")
                recompute.append(module)
    with torch.no_grad():
        for module in recompute:
            model._init_weights(module)  # type: ignore[operator]  # transformers' per-module initialiser


def _view(weights: torch.Tensor, entry: TensorEntry, expected: tuple[int, ...]) -> torch.Tensor:
    if entry.dtype not in DTYPES:
        raise InvalidFieldError(f"layout.{entry.name}.dtype", f"one of {sorted(DTYPES)}", entry.dtype)
    dtype = torch_dtype(entry.dtype)
    if entry.shape != expected:
        raise InvalidFieldError(
            f"layout.{entry.name}.shape", f"{list(expected)} (the model's)", list(entry.shape)
        )
    if entry.offset % dtype.itemsize or entry.offset + entry.nbytes > weights.numel():
        raise InvalidFieldError(
            f"layout.{entry.name}.offset", f"aligned inside the slot ({weights.numel()} bytes)", entry.offset
        )
    return weights[entry.offset : entry.offset + entry.nbytes].view(dtype).view(entry.shape)


def slot_from_checkpoint(directory: Path) -> tuple[torch.Tensor, WeightLayout]:
    """Read a checkpoint into a fresh ``uint8`` slot; for running one without the pool (tests, benchmarks).

    The model store checks the checkpoint and lays it out (a bad one raises its
    :class:`~warmserve.worker.store.CorruptModelError`); the bytes are then read straight into the slot.
    """
    checkpoint = ModelStore(directory.parent).inspect(directory.name)
    slot = torch.empty(checkpoint.total_bytes, dtype=torch.uint8)
    memory = slot.numpy().data
    for source in checkpoint.sources:
        entry = checkpoint.layout.entries[source.name]
        with source.file.open("rb") as f:
            f.seek(source.start)
            f.readinto(memory[entry.offset : entry.offset + entry.nbytes])
    return slot, checkpoint.layout
