"""The wait queue: bounded, FIFO, deadlines, and no reservation lost to a cancelled waiter."""

from __future__ import annotations

import asyncio

import pytest

from warmserve.gateway.admission import HoldExpired, QueueFull, WaitQueue


class _Pool:
    """A few tokens handed out by the queue, to check none is lost or duplicated."""

    def __init__(self, tokens: list[str]) -> None:
        self.free = list(tokens)

    def offer(self, unwanted: frozenset[str]) -> str | None:
        for token in self.free:
            if token not in unwanted:
                self.free.remove(token)
                return token
        return None

    def give_back(self, token: str) -> None:
        self.free.append(token)


def _queue(pool: _Pool, limit: int = 4) -> WaitQueue[str, frozenset[str]]:
    return WaitQueue(limit, pool.give_back)


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_waiters_are_served_in_arrival_order() -> None:
    pool = _Pool([])
    queue = _queue(pool)
    deadline = asyncio.get_running_loop().time() + 5
    tasks = [asyncio.create_task(queue.wait(frozenset(), deadline)) for _ in range(3)]
    await _settle()
    assert len(queue) == 3
    pool.free = ["t1"]
    assert queue.hand_out(pool.offer) == 1
    await _settle()
    assert [t.done() for t in tasks] == [True, False, False]
    assert tasks[0].result() == "t1"
    pool.free = ["t2", "t3"]
    assert queue.hand_out(pool.offer) == 2
    assert [await t for t in tasks[1:]] == ["t2", "t3"]
    assert len(queue) == 0


async def test_a_waiter_that_cannot_use_an_item_keeps_its_place() -> None:
    pool = _Pool([])
    queue = _queue(pool)
    deadline = asyncio.get_running_loop().time() + 5
    picky = asyncio.create_task(queue.wait(frozenset({"a"}), deadline))
    easy = asyncio.create_task(queue.wait(frozenset(), deadline))
    await _settle()
    pool.free = ["a"]
    queue.hand_out(pool.offer)
    assert await easy == "a"
    assert not picky.done() and len(queue) == 1
    pool.free = ["b"]
    queue.hand_out(pool.offer)
    assert await picky == "b"


async def test_a_full_queue_refuses_at_once() -> None:
    queue = _queue(_Pool([]), limit=2)
    deadline = asyncio.get_running_loop().time() + 5
    held = [asyncio.create_task(queue.wait(frozenset(), deadline)) for _ in range(2)]
    await _settle()
    with pytest.raises(QueueFull):
        await queue.wait(frozenset(), deadline)
    for task in held:
        task.cancel()
    await asyncio.gather(*held, return_exceptions=True)
    assert len(queue) == 0


async def test_the_deadline_ends_the_wait_and_frees_the_place() -> None:
    queue = _queue(_Pool([]))
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(HoldExpired):
        await queue.wait(frozenset(), start + 0.05)
    assert 0.04 <= loop.time() - start < 1.0
    assert len(queue) == 0


async def test_an_item_handed_to_a_cancelled_waiter_is_given_back() -> None:
    pool = _Pool([])
    queue = _queue(pool)
    task = asyncio.create_task(queue.wait(frozenset(), asyncio.get_running_loop().time() + 5))
    await _settle()
    pool.free = ["t1"]
    queue.hand_out(pool.offer)  # the waiter's future is resolved ...
    task.cancel()  # ... and it is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.free == ["t1"]
    assert len(queue) == 0
