"""Model sizes for a log's own models: a small file (``--model-sizes``), or a guess from the model's name.

A per-request log names its models but not their sizes, and the size decides everything the simulator
costs: load time, GPUs per replica, KV space, step times. The sizes file maps each model to its weight bytes
and tensor-parallel degree, optionally its KV bytes per token, as YAML::

    chat: {weight: 16Gi, tp: 1}
    code: {weight: 26Gi, tp: 1, kv_bytes_per_token: 800Ki}

or as CSV with the header ``model,weight,tp[,kv_bytes_per_token]``. Quantities are Kubernetes quantities
(``13Gi``, ``2.6e10``), as in a ``ModelDeployment``. A bad line raises :class:`InvalidFieldError` naming the
file, the line and the field (``sizes.csv:3: tp: expected ...``).

A model the file does not list is guessed from its name (:func:`guess_size`): a parameter count in the name
(``7b``, ``13B``, ``0.5b``, ``8x7b``) at fp16; the registered shape within 15 % of that count when there is
one (``llama2-7b`` for ``7b``), which costs it layer by layer; otherwise the KV bytes per token of the
registered shape nearest in size. A name without a count gets :data:`DEFAULT_GUESS`. The tensor-parallel
degree of a guess is the smallest power of two whose shard takes at most half a GPU of the cluster's
profile (the rest is KV space). Every guess says what it was guessed from, for the report.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from warmserve.operator.resources import TENSOR_PARALLEL, parse_quantity
from warmserve.protocol.errors import InvalidFieldError
from warmserve.worker.timing import MODEL_SHAPES, GpuProfile, ModelShape

#: The shape of a model whose name holds no parameter count.
DEFAULT_GUESS = "llama3-8b"
#: A guessed replica's shard takes at most this share of one GPU's memory.
SHARD_SHARE = 0.5
_FIELDS = ("weight", "tp", "kv_bytes_per_token")
_PARAMS = re.compile(r"(?<![a-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)b(?![a-z0-9])", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ModelSize:
    """One model's size. ``shape`` names a registered shape to cost it with (else it is costed from the
    numbers, see :func:`warmserve.worker.timing.shape_for_spec`); ``guess`` says what a guessed size came
    from, empty for a size the file gives."""

    weight_bytes: int
    tensor_parallel: int
    kv_bytes_per_token: int
    shape: str | None = None
    guess: str = ""


def read_sizes(path: Path) -> dict[str, ModelSize]:
    """The sizes file at ``path``: YAML (``.yaml``/``.yml``) or CSV (anything else)."""
    if not path.is_file():
        raise InvalidFieldError("model-sizes", "an existing YAML or CSV file", str(path))
    rows = _yaml_rows(path) if path.suffix.lower() in (".yaml", ".yml") else _csv_rows(path)
    sizes: dict[str, ModelSize] = {}
    for line, model, fields in rows:
        if model in sizes:
            raise InvalidFieldError(f"{path}:{line}: model", "each model once", model)
        sizes[model] = _size(path, line, fields)
    return sizes


def _yaml_rows(path: Path) -> list[tuple[int, str, dict[str, str]]]:
    """``(line, model, {field: text})`` per model of a YAML mapping of mappings of scalars."""
    try:
        root = yaml.compose(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise InvalidFieldError(
            f"{path}:{line}: yaml", "valid YAML", getattr(exc, "problem", str(exc))
        ) from None
    if not isinstance(root, yaml.MappingNode):
        raise InvalidFieldError(f"{path}:1: models", "a mapping of model name to its size", "")
    rows = []
    for key, value in root.value:
        line = key.start_mark.line + 1
        if not isinstance(key, yaml.ScalarNode) or not isinstance(value, yaml.MappingNode):
            raise InvalidFieldError(
                f"{path}:{line}: {key.value}", "model: {weight: ..., tp: ...}", value.value
            )
        fields = {}
        for name, item in value.value:
            if not isinstance(item, yaml.ScalarNode):
                raise InvalidFieldError(f"{path}:{item.start_mark.line + 1}: {name.value}", "a scalar", "")
            fields[str(name.value)] = str(item.value)
        rows.append((line, str(key.value), fields))
    return rows


def _csv_rows(path: Path) -> list[tuple[int, str, dict[str, str]]]:
    """``(line, model, {field: text})`` per data row of a CSV with a ``model,weight,tp[,...]`` header."""
    with path.open(newline="") as handle:
        lines = list(csv.reader(handle))
    header = [name.strip().lower() for name in lines[0]] if lines else []
    if header[:1] != ["model"]:
        raise InvalidFieldError(f"{path}:1: header", "model,weight,tp[,kv_bytes_per_token]", ",".join(header))
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            raise InvalidFieldError(f"{path}:{number}: fields", f"{len(header)} fields", len(cells))
        fields = {
            name: cell.strip() for name, cell in zip(header[1:], cells[1:], strict=True) if cell.strip()
        }
        rows.append((number, cells[0].strip(), fields))
    return rows


def _size(path: Path, line: int, fields: Mapping[str, str]) -> ModelSize:
    """One model's size from its fields; an unknown, missing or bad field raises naming file and line."""
    where = f"{path}:{line}"
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise InvalidFieldError(f"{where}: {unknown[0]}", f"a field among {', '.join(_FIELDS)}", unknown[0])
    for required in ("weight", "tp"):
        if required not in fields:
            raise InvalidFieldError(f"{where}: {required}", "a value (weight and tp are required)", None)
    weight = parse_quantity(fields["weight"], f"{where}: weight")
    tp_text = fields["tp"]
    if not tp_text.isdigit() or int(tp_text) not in TENSOR_PARALLEL:
        raise InvalidFieldError(f"{where}: tp", f"one of {', '.join(map(str, TENSOR_PARALLEL))}", tp_text)
    kv_text = fields.get("kv_bytes_per_token")
    kv = (
        parse_quantity(kv_text, f"{where}: kv_bytes_per_token")
        if kv_text is not None
        else nearest_shape(weight // 2).kv_bytes_per_token
    )
    if kv % 4:
        raise InvalidFieldError(f"{where}: kv_bytes_per_token", "a multiple of 4", kv)
    return ModelSize(weight, int(tp_text), kv)


def nearest_shape(params: int) -> ModelShape:
    """The registered shape whose parameter count is nearest to ``params`` on a log scale."""
    return min(MODEL_SHAPES.values(), key=lambda s: abs(math.log(s.params / max(params, 1))))


def guess_size(name: str, gpu: GpuProfile, gpus_per_node: int) -> ModelSize:
    """A size for a model the sizes file leaves out (see the module docstring)."""
    match = _PARAMS.search(name)
    if match is None:
        shape = MODEL_SHAPES[DEFAULT_GUESS]
        return _guessed(
            shape.weight_bytes,
            shape.kv_bytes_per_token,
            shape.name,
            "no size in the name",
            gpu,
            gpus_per_node,
        )
    params = round(int(match.group(1) or 1) * float(match.group(2)) * 1e9)
    nearest = nearest_shape(params)
    why = f"{match.group(0)} in the name"
    if abs(nearest.params / params - 1) <= 0.15:
        return _guessed(
            nearest.weight_bytes, nearest.kv_bytes_per_token, nearest.name, why, gpu, gpus_per_node
        )
    return _guessed(2 * params, nearest.kv_bytes_per_token, None, f"{why}, fp16", gpu, gpus_per_node)


def _guessed(
    weight: int, kv: int, shape: str | None, why: str, gpu: GpuProfile, gpus_per_node: int
) -> ModelSize:
    fitting = [
        tp for tp in TENSOR_PARALLEL if tp <= gpus_per_node and weight / tp <= SHARD_SHARE * gpu.memory_bytes
    ]
    tp = fitting[0] if fitting else max(tp for tp in TENSOR_PARALLEL if tp <= gpus_per_node)
    costed = f" → {shape}" if shape else ""
    return ModelSize(weight, tp, kv, shape, f"guessed: {why}{costed}, tp {tp} on {gpu.name}")


def sizes_for(
    names: Sequence[str], table: Mapping[str, ModelSize], gpu: GpuProfile, gpus_per_node: int
) -> dict[str, ModelSize]:
    """Each name's size: the file's, else the guess from its name."""
    return {name: table[name] if name in table else guess_size(name, gpu, gpus_per_node) for name in names}
