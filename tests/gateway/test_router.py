"""The router's live state: reservations up to B, FIFO holding, hand-over on release and on new instances."""

from __future__ import annotations

import asyncio

import pytest

from warmserve.gateway.admission import HoldExpired, QueueFull
from warmserve.gateway.config import DeclaredModel
from warmserve.gateway.instances import Instance
from warmserve.gateway.router import Router
from warmserve.protocol.demand_report import ModelDemand


def _instance(replica: str, model: str = "m") -> Instance:
    return Instance("http://w", replica, model, "http://w")


def _deadline(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_balances_up_to_b_per_instance_then_holds() -> None:
    router = Router([DeclaredModel("m", 2)], queue_limit=8)
    a, b = _instance("a"), _instance("b")
    router.update({"m": (a, b)})
    got = [await router.acquire("m", frozenset(), _deadline()) for _ in range(4)]
    assert sorted(i.replica for i in got) == ["a", "a", "b", "b"]
    waiter = asyncio.create_task(router.acquire("m", frozenset(), _deadline()))
    await _settle()
    assert router.demand()["m"] == ModelDemand(inflight=4, queued=1, arrivals_total=0)
    router.release(got[0])
    assert await waiter == got[0]
    assert router.demand()["m"] == ModelDemand(inflight=4, queued=0, arrivals_total=0)


async def test_a_model_at_zero_instances_holds_until_one_appears() -> None:
    router = Router([DeclaredModel("m", 1)], queue_limit=8)
    waiters = [asyncio.create_task(router.acquire("m", frozenset(), _deadline())) for _ in range(2)]
    await _settle()
    assert router.demand()["m"].queued == 2
    router.update({"m": (_instance("a"),)})
    await _settle()
    assert [w.done() for w in waiters] == [True, False]  # the oldest first, and only B of them
    router.update({"m": (_instance("a"), _instance("b"))})
    assert (await waiters[1]).replica == "b"


async def test_new_arrivals_do_not_overtake_held_requests() -> None:
    router = Router([DeclaredModel("m", 1)], queue_limit=8)
    a = _instance("a")
    router.update({"m": (a,)})
    first = await router.acquire("m", frozenset(), _deadline())
    held = asyncio.create_task(router.acquire("m", frozenset(), _deadline()))
    await _settle()
    late = asyncio.create_task(router.acquire("m", frozenset(), _deadline()))
    await _settle()
    router.release(first)
    await _settle()
    assert held.done() and not late.done()
    router.release(await held)
    assert await late == a


async def test_excluded_instances_are_not_handed_to_a_retry() -> None:
    router = Router([DeclaredModel("m", 1)], queue_limit=8)
    a, b = _instance("a"), _instance("b")
    router.update({"m": (a,)})
    retry = asyncio.create_task(router.acquire("m", frozenset({a.incarnation}), _deadline()))
    await _settle()
    assert not retry.done()
    router.update({"m": (a, b)})
    assert await retry == b


async def test_overload_and_deadline() -> None:
    router = Router([DeclaredModel("m", 1)], queue_limit=1)
    held = asyncio.create_task(router.acquire("m", frozenset(), _deadline(0.05)))
    await _settle()
    with pytest.raises(QueueFull):
        await router.acquire("m", frozenset(), _deadline())
    with pytest.raises(HoldExpired):
        await held
    assert router.demand()["m"] == ModelDemand(0, 0, 0)


async def test_arrivals_and_release_keep_counts_per_model() -> None:
    router = Router([DeclaredModel("m"), DeclaredModel("n")], queue_limit=1)
    router.update({"m": (_instance("a"),), "n": (_instance("b", "n"),)})
    router.arrive("m")
    router.arrive("m")
    got = await router.acquire("n", frozenset(), _deadline())
    assert router.demand() == {"m": ModelDemand(0, 0, 2), "n": ModelDemand(1, 0, 0)}
    router.release(got)
    assert router.demand()["n"] == ModelDemand(0, 0, 0)
