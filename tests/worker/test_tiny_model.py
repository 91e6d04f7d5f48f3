"""`warmserve make-tiny-model`: a real Llama checkpoint and tokenizer that transformers loads and runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from warmserve.cli import build_parser
from warmserve.protocol.errors import InvalidFieldError
from warmserve.worker.tiny_model import TinyModelSize, make_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_tiny_model_loads_and_generates_with_transformers(tiny: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert len(tokenizer) == model.config.vocab_size == 1000
    assert (model.config.hidden_size // model.config.num_attention_heads) == 32  # vLLM CPU kernels need >= 32
    text = "Hello world, how are you?"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == text  # byte-level BPE round-trips
    out = model.generate(ids, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    assert out.shape[1] == ids.shape[1] + 5
    assert (tiny / "model.safetensors").stat().st_size < 2_000_000


def test_same_seed_same_weights_other_seed_other_weights(tiny: Path, tmp_path: Path) -> None:
    again = load_file(make_tiny_model(tmp_path / "again") / "model.safetensors")
    first = load_file(tiny / "model.safetensors")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = load_file(make_tiny_model(tmp_path / "other", seed=1) / "model.safetensors")
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_cli_makes_a_bigger_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "big"
    args = build_parser().parse_args(["make-tiny-model", str(target), "--hidden", "128", "--layers", "3"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(target)
    config = json.loads((target / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (128, 3, 256)


@pytest.mark.parametrize(
    ("size", "field"),
    [
        (TinyModelSize(hidden=65), "hidden"),
        (TinyModelSize(layers=0), "layers"),
        (TinyModelSize(vocab=10), "vocab"),
    ],
)
def test_bad_sizes_name_the_field(size: TinyModelSize, field: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidFieldError) as err:
        make_tiny_model(tmp_path / "m", size)
    assert err.value.field == field
    assert not (tmp_path / "m").exists()


def test_refuses_a_non_empty_directory(tiny: Path) -> None:
    with pytest.raises(InvalidFieldError) as err:
        make_tiny_model(tiny)
    assert err.value.field == "directory"
