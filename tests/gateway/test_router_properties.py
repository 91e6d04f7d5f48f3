"""Router invariants under random arrivals, completions and instance changes (hypothesis).

Whatever happens: no instance ever carries more than B of our requests, a request is held only while no
instance has room (work-conserving), held requests are served in arrival order (FIFO), and the demand
counts match what is really in flight and waiting.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from warmserve.gateway.config import DeclaredModel
from warmserve.gateway.instances import Instance
from warmserve.gateway.router import Router

_INSTANCES = [Instance("http://w", f"r{i}", "m", "http://w") for i in range(3)]

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.just(0)),
        st.tuples(st.just("finish"), st.integers(0, 20)),
        st.tuples(st.just("instances"), st.integers(0, 7)),  # a bit mask over _INSTANCES
    ),
    max_size=40,
)


@settings(deadline=None, max_examples=150)
@given(st.integers(1, 3), _ops)
def test_router_invariants(cap: int, ops: list[tuple[str, int]]) -> None:
    asyncio.run(_scenario(cap, ops))


async def _scenario(cap: int, ops: list[tuple[str, int]]) -> None:
    router = Router([DeclaredModel("m", cap)], queue_limit=1000)
    deadline = asyncio.get_running_loop().time() + 60
    waiting: list[asyncio.Task[Instance]] = []
    holding: list[Instance] = []
    served_order: list[int] = []
    arrivals = 0
    for op, arg in ops:
        if op == "arrive":
            task = asyncio.create_task(router.acquire("m", frozenset(), deadline), name=str(arrivals))
            arrivals += 1
            waiting.append(task)
        elif op == "finish" and holding:
            router.release(holding.pop(arg % len(holding)))
        elif op == "instances":
            router.update({"m": tuple(i for n, i in enumerate(_INSTANCES) if arg >> n & 1)})
        for _ in range(3):
            await asyncio.sleep(0)
        for task in [t for t in waiting if t.done()]:
            waiting.remove(task)
            holding.append(task.result())
            served_order.append(int(task.get_name()))
        _check(router, cap, holding, waiting)
    assert served_order == sorted(served_order)  # FIFO
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


def _check(router: Router, cap: int, holding: list[Instance], waiting: list[asyncio.Task[Instance]]) -> None:
    per_instance = Counter(i.key for i in holding)
    assert all(n <= cap for n in per_instance.values())
    demand = router.demand()["m"]
    assert (demand.inflight, demand.queued) == (len(holding), len(waiting))
    if waiting:  # held only while every current instance is full
        current = router.table.get("m", ())
        assert all(per_instance[i.key] >= cap for i in current)
