"""Continuous batching with a cap B, shared by the fake and torch engines so both admit alike.

An instance runs one scheduler task while it has work. Each *iteration*: waiting requests join in
arrival order while fewer than B run and their KV reservation (``(prompt + max_tokens) × bytes per
token``) fits; then every running sequence advances by one token — the ones that just joined are
prefilled and give their first token — and each token is handed to its request's stream. A request
that can never fit (its reservation exceeds the whole KV space, lent space included) is refused with
:class:`InvalidFieldError` on ``prompt`` or ``max_tokens``; one that would fit were the space lent to
prewarmed models given back is :class:`UnavailableError` (a 503 the client retries): the scheduler
decides the lending, and bad input is what no state of the worker could serve. Closing a stream early
cancels its request: it leaves the queue at once or, if an iteration is computing it, when that
iteration ends; either way its KV range is free when the stream's ``aclose()`` returns. An iteration
that raises fails only the requests in it.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from warmserve.protocol.errors import InvalidFieldError, UnavailableError
from warmserve.worker.engines.base import GenerateRequest, Instance, Prepared, TokenEvent
from warmserve.worker.engines.kv_space import KvRange, KvSpace


@dataclass(eq=False)
class Sequence:
    """One request inside an instance; engines subclass it to keep their per-sequence state."""

    request: GenerateRequest
    prompt_tokens: int
    events: asyncio.Queue[TokenEvent | BaseException] = field(default_factory=asyncio.Queue)
    kv: KvRange | None = None
    generated: int = 0
    cancelled: bool = False

    @property
    def reserved_tokens(self) -> int:
        return self.prompt_tokens + self.request.max_tokens


S = TypeVar("S", bound=Sequence)


class BatchingInstance(Instance, Generic[S]):
    """An :class:`Instance` whose engine only says how to open a sequence and run one iteration."""

    def __init__(self, prepared: Prepared, kv_bytes: int, max_batch: int) -> None:
        self.prepared = prepared
        self._space = KvSpace(kv_bytes)
        self._whole_kv_bytes = kv_bytes  # the largest it has had: what a request may ever reserve
        self._max_batch = max_batch
        self._waiting: deque[S] = deque()
        self._running: list[S] = []
        self._scheduler: asyncio.Task[None] | None = None
        self._step: asyncio.Future[list[TokenEvent]] | None = None
        self._stepping: list[S] = []
        self._closed = False

    # --- what an engine provides ---------------------------------------------------------------

    @abc.abstractmethod
    def _open(self, request: GenerateRequest) -> S:
        """A new sequence for ``request`` (tokenizes it); bad input raises :class:`InvalidFieldError`."""

    def _admitted(self, seq: S) -> None:  # an optional hook
        """``seq`` got its KV range ``seq.kv`` and joins the next iteration."""

    def _retired(self, seq: S) -> None:  # an optional hook
        """``seq`` left (finished, cancelled or failed); its KV range is about to be freed."""

    @abc.abstractmethod
    async def _iterate(self, joining: list[S], decoding: list[S]) -> list[TokenEvent]:
        """Advance every sequence one token; one event per sequence, ``joining`` first, in order."""

    # --- the Instance interface ----------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return len(self._waiting) + len(self._running)

    @property
    def kv_used_bytes(self) -> int:
        return self._space.used_bytes

    @property
    def kv_total_bytes(self) -> int:
        return self._space.capacity

    def resize_kv(self, kv_bytes: int) -> bool:
        """Shrink or grow the KV space at its top; sequences already admitted keep their ranges."""
        if not self._space.resize(kv_bytes):
            return False
        self._whole_kv_bytes = max(self._whole_kv_bytes, kv_bytes)
        self._admit()  # growing may let waiting sequences in
        return True

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenEvent]:
        if self._closed:
            raise UnavailableError(f"{self.prepared.spec.name}: the instance was demoted and serves nothing")
        seq = self._open(request)
        self._check_fits(seq, request)
        self._waiting.append(seq)
        if self._scheduler is None:
            self._scheduler = asyncio.create_task(self._schedule())
        try:
            while True:
                item = await seq.events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            await self._cancel(seq)

    def close(self) -> None:
        """Refuse further requests; raise :class:`UnavailableError` if any is still in flight."""
        if self.inflight:
            raise UnavailableError(
                f"{self.prepared.spec.name}: {self.inflight} requests in flight; drain first"
            )
        self._closed = True

    # --- scheduling ----------------------------------------------------------------------------

    async def _schedule(self) -> None:
        try:
            while self._waiting or self._running:
                self._admit()
                joining = [s for s in self._running if s.generated == 0]
                decoding = [s for s in self._running if s.generated > 0]
                self._stepping = joining + decoding
                self._step = asyncio.ensure_future(self._iterate(joining, decoding))
                try:
                    events = await asyncio.shield(self._step)
                except Exception as exc:  # the engine failed: fail the requests it was computing
                    for seq in self._stepping:
                        seq.events.put_nowait(exc)
                        self._retire(seq)
                    continue
                finally:
                    self._step = None
                self._deliver(events)
        finally:
            self._scheduler = None

    def _check_fits(self, seq: S, request: GenerateRequest) -> None:
        """Refuse a request longer than the model's context length or the whole KV space (bad input), or
        one that cannot fit while KV space is lent (temporary; never one within the context length, for
        which a serving replica keeps room: ``protocol.state.kept_kv_bytes``)."""
        per_token = max(self.prepared.kv_bytes_per_token, 1)
        limit, what = self._whole_kv_bytes // per_token, "the KV space"
        context = self.prepared.spec.context_length
        if 0 < context <= limit:
            limit, what = context, "the model's context length"
        if seq.prompt_tokens >= limit:  # no max_tokens could fit: the prompt is what is too long
            raise InvalidFieldError(
                "prompt",
                f"a prompt shorter than {what} ({limit} tokens)",
                f"{seq.prompt_tokens} tokens",
            )
        if seq.reserved_tokens > limit:
            raise InvalidFieldError(
                "max_tokens",
                f"prompt ({seq.prompt_tokens} tokens) + max_tokens within {what} ({limit} tokens)",
                request.max_tokens,
            )
        if seq.reserved_tokens > self._space.capacity // per_token:
            raise UnavailableError(
                f"{self.prepared.spec.name}: {seq.reserved_tokens} tokens of KV space are not free while "
                "part of it is lent to prewarmed models; retry"
            )

    def _admit(self) -> None:
        while self._waiting and len(self._running) < self._max_batch:
            seq = self._waiting[0]
            kv = self._space.allocate(max(seq.reserved_tokens * self.prepared.kv_bytes_per_token, 1))
            if kv is None:
                return  # first come, first served: the head waits for KV space, nobody overtakes it
            self._waiting.popleft()
            seq.kv = kv
            self._running.append(seq)
            self._admitted(seq)

    def _deliver(self, events: list[TokenEvent]) -> None:
        for seq, event in zip(self._stepping, events, strict=True):
            if seq.cancelled:
                self._retire(seq)
                continue
            seq.generated += 1
            seq.events.put_nowait(event)
            if event.finish_reason is not None:
                self._retire(seq)

    async def _cancel(self, seq: S) -> None:
        if seq.kv is None and seq not in self._waiting:
            return  # finished, failed, or already cancelled
        seq.cancelled = True
        if seq in self._waiting:
            self._waiting.remove(seq)
            return
        step = self._step
        if step is not None and seq in self._stepping:
            with contextlib.suppress(Exception):
                await asyncio.shield(step)  # its tensors are in use until the iteration ends
        self._retire(seq)

    def _retire(self, seq: S) -> None:
        if seq in self._running:
            self._running.remove(seq)
        if seq.kv is not None:
            self._retired(seq)
            self._space.free(seq.kv)
            seq.kv = None
