"""The real checkpoints a ``warmserve local --engine torch|vllm`` run serves: tiny Llamas made for the run.

:func:`make_checkpoints` writes one tiny model per trace model with ``warmserve make-tiny-model``'s own
code (:func:`warmserve.worker.tiny_model.make_tiny_model`) into a model store the run owns, then reads
back what the scheduler must know from the files themselves: the weight bytes as the worker's store lays
them out in a slot, and the KV bytes per token from ``config.json``. Sizes follow the fake engine's
shapes in spirit — in name order the first model is the largest — and stay small enough for a CPU:

| rank | hidden | layers | heads | weights (float32) |
|---|---|---|---|---|
| 1st | 256 | 4 | 4 | ≈ 12.5 MB |
| 2nd | 128 | 4 | 4 | ≈ 3.7 MB |
| 3rd | 64 | 2 | 2 | ≈ 0.8 MB |

Every head is 32 or 64 wide, which vLLM's CPU attention kernels accept. A checkpoint that cannot be
written or read back raises (:class:`~warmserve.protocol.errors.InvalidFieldError`,
:class:`~warmserve.worker.store.CorruptModelError`) before any process starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmserve.worker.store import ModelStore
from warmserve.worker.tiny_model import TinyModelSize, make_tiny_model

#: Tiny model sizes given to the trace's models in name order (further models cycle).
SIZES = (
    TinyModelSize(hidden=256, layers=4, heads=4, intermediate=512),
    TinyModelSize(hidden=128, layers=4, heads=4, intermediate=256),
    TinyModelSize(hidden=64, layers=2, heads=2, intermediate=128),
)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One model's checkpoint directory and its real sizes."""

    path: Path
    weight_bytes: int  # as laid out in a slot (the worker's store: aligned tensors)
    kv_bytes_per_token: int


def make_checkpoints(root: Path, models: Sequence[str]) -> dict[str, Checkpoint]:
    """Write a tiny checkpoint per model under ``root`` (an existing directory) and measure each."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no "Writing model shards" bars
    store = ModelStore(root)
    out = {}
    for i, model in enumerate(sorted(models)):
        path = make_tiny_model(root / model, SIZES[i % len(SIZES)], seed=i)
        inspected = store.inspect(model)
        out[model] = Checkpoint(path.absolute(), inspected.total_bytes, kv_bytes_per_token(inspected.config))
    return out


def kv_bytes_per_token(config: Mapping[str, Any]) -> int:
    """Keys and values of one token over all layers, from a Llama-family ``config.json``. torch is
    imported here, not at the top: ``warmserve local`` with fake engines runs where torch is not installed."""
    import torch

    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    dtype: torch.dtype = getattr(torch, str(config.get("dtype") or config.get("torch_dtype") or "float32"))
    return 2 * int(config["num_hidden_layers"]) * kv_heads * head_dim * dtype.itemsize
