"""The replay's client: sends each arrival at its time through the gateway and records how it ended.

Every request is a streamed completion (so the first token is visible); its TTFT is measured from its
*scheduled* arrival, so time spent waiting for a client slot (``concurrency`` requests at most in flight)
counts against it, as a user would see it. Every request ends in exactly one :class:`Outcome`: a
response that ended with ``[DONE]``, or an error — an HTTP error status with the server's message, an
error event mid-stream, a stream cut short, a connection failure, or the per-request timeout — so the
counts always add up to the arrivals.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from warmserve.local.arrivals import Arrival
from warmserve.protocol.openai_api import stream_events

PROMPT = "Summarise the history of warm starts in one sentence."


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one request ended. ``ttft_s`` is None unless a first token arrived; ``error`` empty = success."""

    model: str
    at_s: float
    ttft_s: float | None
    latency_s: float
    status: int  # HTTP status; 0 when no response came (connection failure, timeout)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How the client sends: tokens per request, requests in flight at most, seconds per request at most."""

    max_tokens: int = 16
    concurrency: int = 256
    timeout_s: float = 60.0


async def replay(
    gateway: str,
    arrivals: Sequence[Arrival],
    config: ClientConfig = ClientConfig(),
    on_done: Callable[[Outcome], object] | None = None,
    start: float | None = None,
) -> list[Outcome]:
    """Send every arrival at its time (local seconds from ``start``, a ``time.monotonic()`` value;
    default: now); return the outcomes in arrival order."""
    slots = asyncio.Semaphore(config.concurrency)
    connector = aiohttp.TCPConnector(limit=config.concurrency)
    timeout = aiohttp.ClientTimeout(total=config.timeout_s)
    url = f"{gateway.rstrip('/')}/v1/completions"
    start = time.monotonic() if start is None else start
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(arrival: Arrival) -> Outcome:
            async with slots:
                outcome = await send(session, url, arrival, start, config)
            if on_done is not None:
                on_done(outcome)
            return outcome

        tasks = []
        for arrival in arrivals:
            delay = start + arrival.at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(arrival)))
        return list(await asyncio.gather(*tasks))


async def send(
    session: aiohttp.ClientSession, url: str, arrival: Arrival, start: float, config: ClientConfig
) -> Outcome:
    """One streamed completion; never raises for a failed request (it becomes the outcome's error)."""
    sent = start + arrival.at_s
    body = {"model": arrival.model, "prompt": PROMPT, "max_tokens": config.max_tokens, "stream": True}
    first: float | None = None
    status = 0
    try:
        async with session.post(url, json=body) as response:
            status = response.status
            if status != 200:
                return _failed(arrival, sent, None, status, f"HTTP {status}: {await _message(response)}")
            async for event in stream_events(response.content):
                if event.kind == "done":
                    return Outcome(
                        arrival.model, arrival.at_s, _since(sent, first), time.monotonic() - sent, 200
                    )
                if event.kind == "error":
                    error = json.loads(event.data)["error"]
                    return _failed(arrival, sent, first, status, f"stream error: {error}")
                first = first if first is not None else time.monotonic()
        return _failed(arrival, sent, first, status, "stream ended without [DONE]")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return _failed(arrival, sent, first, status, f"{type(exc).__name__}: {exc}")


def _since(sent: float, first: float | None) -> float | None:
    return None if first is None else first - sent


def _failed(arrival: Arrival, sent: float, first: float | None, status: int, error: str) -> Outcome:
    return Outcome(arrival.model, arrival.at_s, _since(sent, first), time.monotonic() - sent, status, error)


async def _message(response: aiohttp.ClientResponse) -> str:
    """The OpenAI-shaped error's message, or the start of the body when it is not one."""
    text = await response.text()
    try:
        return str(json.loads(text)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return text[:200]
