"""Which ModelDeployments a discovering gateway serves, and a model set replaced at run time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from warmserve.gateway.admission import HoldExpired
from warmserve.gateway.config import DeclaredModel
from warmserve.gateway.model_deployments import declared_models
from warmserve.gateway.router import ModelDropped, Router


def deployment(name: str | None, *, b: Any = None, degraded: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {} if name is None else {"servedName": name}
    if degraded:
        status["conditions"] = [{"type": "Degraded", "status": "True", "reason": "InvalidSpec"}]
    spec = {} if b is None else {"serving": {"maxConcurrency": b}}
    return {"metadata": {"name": f"md-{name}"}, "spec": spec, "status": status}


def test_only_parsed_healthy_deployments_declare_their_model_with_its_b() -> None:
    found = declared_models(
        [
            deployment("b-model", b=4),
            deployment("a-model"),  # no B in the spec: the default
            deployment(None),  # not parsed by the operator yet
            deployment("refused", degraded=True),
            deployment("a-model", b=2),  # a served name another one holds: the first counts
        ]
    )
    assert found == (DeclaredModel("a-model"), DeclaredModel("b-model", 4))


async def test_a_dropped_model_fails_its_waiters_and_a_new_one_can_be_waited_for() -> None:
    router = Router([DeclaredModel("a")], queue_limit=4)
    deadline = asyncio.get_running_loop().time() + 5
    waiter = asyncio.create_task(router.acquire("a", frozenset(), deadline))
    await asyncio.sleep(0)
    router.set_models([DeclaredModel("b", 2)])
    with pytest.raises(ModelDropped, match="'a' is no longer served"):
        await waiter
    assert isinstance(ModelDropped("x"), HoldExpired)  # answered as a 503, like a hold that expired
    assert router.models == ("b",) and set(router.demand()) == {"b"}
    with pytest.raises(ModelDropped):
        await router.acquire("a", frozenset(), deadline)
    router.set_models([DeclaredModel("a"), DeclaredModel("b", 2)])
    assert router.models == ("a", "b")
