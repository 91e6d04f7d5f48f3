"""A real, small Llama-family checkpoint and tokenizer made locally, with no model hub.

For tests and demos: a byte-level BPE trained with ``tokenizers`` on a small built-in corpus, wrapped as a
``PreTrainedTokenizerFast``, and a randomly initialised (seeded) ``LlamaForCausalLM``, both written with
``save_pretrained`` (safetensors) so that anything that loads a Hugging Face checkpoint directory loads it.
The default size (hidden 64, 2 heads of dim 32, 2 layers) is about 1 MB and is accepted by vLLM's CPU
attention kernels (head_dim >= 32); ``hidden``/``layers`` make bigger ones for size-scaling benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmserve.protocol.errors import InvalidFieldError

#: Enough varied English to learn a 1000-token byte-level vocabulary; the model's outputs are random anyway.
CORPUS = (
    "WarmServe serves many large language models on one shared GPU cluster.",
    "It forecasts the load of each model and prewarms universal workers before a burst arrives.",
    "A prewarmed replica holds the weights of a model in a slot of the memory pool and serves nothing.",
    "Promotion turns a prewarmed replica into a serving instance without copying any weight.",
    "The key and value cache of a serving instance sits in the same slot, right after the weights.",
    "When the load falls, the instance is demoted: its cache is unmapped and its weights stay resident.",
    "The quick brown fox jumps over the lazy dog while the scheduler counts tokens per second.",
    "Time to first token, time per output token, throughput and goodput are measured for every request.",
    "Hello world! How are you today? I am fine, thank you. What time is it? It is twelve o'clock.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2.71828; symbols: + - * / = < > ( ) [ ] { } # @ %.",
)
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")


@dataclass(frozen=True, slots=True)
class TinyModelSize:
    """The knobs of a tiny model; ``head_dim`` is ``hidden / heads``."""

    hidden: int = 64
    layers: int = 2
    heads: int = 2
    intermediate: int = 128
    vocab: int = 1000
    max_positions: int = 2048


def make_tiny_model(directory: Path, size: TinyModelSize = TinyModelSize(), seed: int = 0) -> Path:
    """Write a tiny Llama checkpoint and its tokenizer to ``directory`` (created if missing); return it.

    Deterministic for a given ``size`` and ``seed``. A bad size raises :class:`InvalidFieldError`; an
    existing non-empty ``directory`` is refused (``InvalidFieldError`` on ``directory``) rather than mixed.
    """
    _check_size(size)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InvalidFieldError("directory", "a new or empty directory", str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _make_tokenizer(size.vocab)
    tokenizer.save_pretrained(directory)
    _make_model(size, len(tokenizer), seed).save_pretrained(directory, safe_serialization=True)
    return directory


def _check_size(size: TinyModelSize) -> None:
    for field in ("hidden", "layers", "heads", "intermediate", "max_positions"):
        value = getattr(size, field)
        if value < 1:
            raise InvalidFieldError(field, "a positive integer", value)
    if size.hidden % size.heads:
        raise InvalidFieldError("hidden", f"a multiple of heads ({size.heads})", size.hidden)
    if size.vocab < 300:  # 256 byte symbols + the special tokens + some merges
        raise InvalidFieldError("vocab", "an integer >= 300", size.vocab)


def _make_tokenizer(vocab: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Spelled-out numbers give the trainer enough distinct merges to fill any vocabulary we accept.
    numbers = (" ".join(str(n) for n in range(start, start + 100)) for start in range(0, 20_000, 100))
    tokenizer.train_from_iterator((*CORPUS, *numbers), trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # transformers is partly typed
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def _make_model(size: TinyModelSize, vocab: int, seed: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=size.hidden,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        num_hidden_layers=size.layers,
        intermediate_size=size.intermediate,
        vocab_size=vocab,
        max_position_embeddings=size.max_positions,
        bos_token_id=SPECIAL_TOKENS.index("<s>"),
        eos_token_id=SPECIAL_TOKENS.index("</s>"),
        tie_word_embeddings=False,
        dtype="float32",
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()  # type: ignore[no-untyped-call]
