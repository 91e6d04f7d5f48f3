"""The desired/observed state documents: round trips and field-naming rejections."""

from __future__ import annotations

import json
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import (
    DesiredState,
    GpuUsage,
    ModelSpec,
    ObservedReplica,
    ObservedState,
    ReplicaState,
    Role,
)


def desired_doc() -> dict[str, Any]:
    return {
        "worker": "node-a",
        "generation": 3,
        "models": {
            "llama": {
                "weights": "/cache/llama",
                "weight_bytes": 1000,
                "tensor_parallel": 2,
                "max_concurrency": 4,
            },
            "qwen": {"weights": "/cache/qwen", "weight_bytes": 500},
        },
        "replicas": [
            {"id": "llama-0", "model": "llama", "gpus": [0, 1], "role": "serve", "kv_lend_bytes": 64},
            {"id": "qwen-0", "model": "qwen", "gpus": [0], "role": "prewarm", "priority": 2.5},
        ],
    }


def test_desired_round_trip_keeps_every_field() -> None:
    state = DesiredState.from_dict(desired_doc())
    assert state.replicas[0].role is Role.SERVE
    assert state.replicas[0].gpus == (0, 1)
    assert state.models["llama"].shard_bytes == 500
    assert DesiredState.from_json(state.to_json()) == state


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("generation",), -1, "generation"),
        (("worker",), "", "worker"),
        (("models", "qwen", "weight_bytes"), 0, "models.qwen.weight_bytes"),
        (("models", "qwen", "name"), "other", "models.qwen.name"),
        (("replicas", 1, "model"), "mistral", "replicas[1].model"),
        (("replicas", 1, "role"), "serving", "replicas[1].role"),
        (("replicas", 0, "gpus"), [0], "replicas[0].gpus"),  # tensor_parallel is 2
        (("replicas", 1, "gpus"), [0, 0], "replicas[1].gpus"),
        (("replicas", 1, "gpus"), ["0"], "replicas[1].gpus[0]"),
        (("replicas", 1, "priority"), float("nan"), "replicas[1].priority"),
        (("replicas", 1, "id"), "llama-0", "replicas[1].id"),
    ],
)
def test_desired_rejects_bad_field_by_name(path: tuple[Any, ...], value: object, field: str) -> None:
    doc = desired_doc()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InvalidFieldError) as err:
        DesiredState.from_dict(doc)
    assert err.value.field == field
    assert field in str(err.value)


def test_two_serving_replicas_or_one_model_twice_on_a_gpu_are_rejected() -> None:
    doc = desired_doc()
    doc["replicas"][1]["role"] = "serve"
    with pytest.raises(
        InvalidFieldError, match=r"replicas\[1\].gpus: expected no GPU already serving 'llama'"
    ):
        DesiredState.from_dict(doc)
    doc = desired_doc()
    doc["replicas"].append({"id": "qwen-1", "model": "qwen", "gpus": [0], "role": "prewarm"})
    with pytest.raises(InvalidFieldError, match="already holding 'qwen'"):
        DesiredState.from_dict(doc)


def test_malformed_json_names_the_document() -> None:
    with pytest.raises(InvalidFieldError, match="desired: expected a JSON document"):
        DesiredState.from_json("{not json")


def test_observed_round_trip_and_capacity_check() -> None:
    state = ObservedState(
        worker="node-a",
        observed_generation=3,
        ready=True,
        gpus=(GpuUsage(index=0, capacity_bytes=100, used_bytes=60, lent_bytes=10),),
        replicas=(
            ObservedReplica(
                id="q", model="qwen", gpus=(0,), state=ReplicaState.LOADING, since=12.5, progress=0.25
            ),
        ),
    )
    assert ObservedState.from_json(state.to_json()) == state
    doc = json.loads(state.to_json())
    doc["gpus"][0]["used_bytes"] = 101
    with pytest.raises(InvalidFieldError, match=r"gpus\[0\].used_bytes"):
        ObservedState.from_dict(doc)
    doc = json.loads(state.to_json())
    doc["replicas"][0]["state"] = "warm"
    with pytest.raises(InvalidFieldError, match=r"replicas\[0\].state: expected one of"):
        ObservedState.from_dict(doc)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_any_json_value_is_accepted_or_rejected_with_a_field_error(doc: object) -> None:
    for parse in (DesiredState.from_dict, ObservedState.from_dict):
        try:
            parse(doc)
        except InvalidFieldError as exc:
            assert exc.field


def test_a_model_spec_with_read_only_engine_args_is_written_and_read_back() -> None:
    # The operator's parser hands its engine arguments over as a read-only mapping.
    spec = ModelSpec(
        name="m", weights="fake://m", weight_bytes=1, engine_args=MappingProxyType({"shape": "s"})
    )
    state = DesiredState(worker="w", generation=1, models={"m": spec}, replicas=())
    assert DesiredState.from_json(state.to_json()).models["m"] == replace(spec, engine_args={"shape": "s"})
