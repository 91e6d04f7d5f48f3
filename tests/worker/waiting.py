"""What the worker's channel tests wait for: the next accepted state, or a condition, each at most 5 s."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from warmserve.protocol.state import DesiredState
from warmserve.worker.desired_feed import DesiredSource


async def next_state(source: DesiredSource) -> DesiredState:
    """The next state ``source`` accepts; fail after 5 s."""
    return await asyncio.wait_for(anext(aiter(source)), timeout=5)


async def until(condition: Callable[[], bool]) -> None:
    """Poll (briefly) until ``condition`` holds; fail after 5 s."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)
