"""Gateway configuration: declared models and their B, worker URLs, bounds; bad values name the option."""

from __future__ import annotations

import pytest

from warmserve.gateway.config import DEFAULT_MAX_CONCURRENCY, DeclaredModel, GatewayConfig, parse_model_arg
from warmserve.protocol.errors import InvalidFieldError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("llama", DeclaredModel("llama", DEFAULT_MAX_CONCURRENCY)),
        ("llama:16", DeclaredModel("llama", 16)),
        ("org/llama:3b:4", DeclaredModel("org/llama:3b", 4)),
    ],
)
def test_model_argument(text: str, expected: DeclaredModel) -> None:
    assert parse_model_arg(text) == expected


@pytest.mark.parametrize("text", ["", ":4", "llama:", "llama:0", "llama:-1", "llama:x", "a:3b"])
def test_bad_model_argument_names_the_option(text: str) -> None:
    with pytest.raises(InvalidFieldError) as info:
        parse_model_arg(text)
    assert info.value.field == "--model"


def test_worker_urls_are_normalised_and_deduplicated() -> None:
    config = GatewayConfig((DeclaredModel("m"),), workers=("http://a:1/", "http://a:1", "https://b"))
    assert config.workers == ("http://a:1", "https://b")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"workers": ("a:1",)}, "workers"),
        ({"workers": ("http://a:1/v1",)}, "workers"),
        ({"queue_limit": 0}, "queue_limit"),
        ({"hold_timeout_s": -1.0}, "hold_timeout_s"),
        ({"retry_after_s": 0}, "retry_after_s"),
        ({"models": (DeclaredModel("m"), DeclaredModel("m"))}, "models"),
        ({"models": (DeclaredModel("m", 0),)}, "models[m].max_concurrency"),
        ({"discover_namespace": ""}, "discover_namespace"),
        ({"discover_namespace": "ns", "workers": ("http://a:1",)}, "discover_namespace"),
        ({"worker_selector": ""}, "worker_selector"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"models": (DeclaredModel("m"),), **kwargs}
    with pytest.raises(InvalidFieldError) as info:
        GatewayConfig(**args)  # type: ignore[arg-type]
    assert info.value.field == field
