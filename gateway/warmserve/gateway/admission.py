"""Holding requests that find no free instance: one bounded FIFO wait queue per model, with deadlines.

A request that finds no instance waits here until capacity is handed to it (FIFO: the oldest waiter that
can use what appeared gets it first), its deadline passes (:class:`HoldExpired`), or the queue is already
full when it arrives (:class:`QueueFull`, at once: overload costs no memory and no waiting). Both errors
become ``503`` with ``Retry-After`` at the HTTP layer.

The queue hands out items through an ``offer`` callable that reserves one for a waiter (or returns None);
an item handed to a waiter that was cancelled in the same instant is given back through ``give_back``,
so no reservation ever leaks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from warmserve.protocol.errors import UnavailableError

T = TypeVar("T")  # what is handed out (an instance)
W = TypeVar("W")  # what a waiter wants (the instances it must not be given)


class QueueFull(UnavailableError):
    """The model's wait queue is at its limit: the request is refused at once."""


class HoldExpired(UnavailableError):
    """The request's deadline passed before capacity appeared."""


@dataclass(frozen=True, slots=True, eq=False)
class _Waiter(Generic[T, W]):
    want: W
    future: asyncio.Future[T]


class WaitQueue(Generic[T, W]):
    """The requests of one model waiting for an instance, oldest first, at most ``limit`` of them."""

    def __init__(self, limit: int, give_back: Callable[[T], None]) -> None:
        self.limit = limit
        self._give_back = give_back
        self._waiters: deque[_Waiter[T, W]] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    async def wait(self, want: W, deadline: float) -> T:
        """Wait until an item is handed to us; ``deadline`` is in the running loop's clock.

        Raises :class:`QueueFull` at once when the queue is full, :class:`HoldExpired` at the deadline.
        """
        if len(self._waiters) >= self.limit:
            raise QueueFull(f"{len(self._waiters)} requests already waiting (the limit)")
        loop = asyncio.get_running_loop()
        waiter: _Waiter[T, W] = _Waiter(want, loop.create_future())
        self._waiters.append(waiter)
        timer = loop.call_at(deadline, self._expire, waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            # Handed an item in the same loop iteration as we were cancelled: return it.
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                self._give_back(waiter.future.result())
            raise
        finally:
            timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def hand_out(self, offer: Callable[[W], T | None]) -> int:
        """Offer capacity to the waiters in FIFO order; return how many were served.

        ``offer(want)`` reserves an item suitable for that waiter or returns None; a waiter that cannot
        be served keeps its place, and later waiters may still be served by what it could not use.
        """
        served = 0
        for waiter in list(self._waiters):
            if waiter.future.done():
                continue
            item = offer(waiter.want)
            if item is not None:
                waiter.future.set_result(item)
                self._waiters.remove(waiter)
                served += 1
        return served

    def close(self, error: UnavailableError) -> None:
        """Fail every waiter with ``error`` at once (the model stopped being served)."""
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(error)

    def _expire(self, waiter: _Waiter[T, W]) -> None:
        if not waiter.future.done():
            waiter.future.set_exception(HoldExpired("no instance became free before the deadline"))
