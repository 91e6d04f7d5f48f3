"""What a worker does with each desired-state document, whatever channel brought it: judge it, and hand
the accepted states to the worker in order.

Every channel (:mod:`.desired_source`: the Pod's annotation, a file; the HTTP server's ``PUT``) hands raw
documents to one :class:`DesiredFeed`, which decides what each means with the pure :func:`judge` and
offers the worker one interface: an async iterator of accepted :class:`DesiredState` values in increasing
generation (a slow consumer skips intermediate ones and gets the newest: each document is complete,
converging to the newest is what matters), plus the latest :class:`Rejection` for
``ObservedState.error``. The HTTP server answers from the :data:`Verdict` that :meth:`DesiredFeed.offer`
returns.

Rules, the same for every channel:

- a document that fails validation, or names another worker, is rejected: the error names the field,
  the previous state is kept and nothing is yielded;
- a generation equal to the one accepted is a repeat (re-list, unrelated Pod update) and is ignored
  quietly (it clears a rejection: the document in place is valid again); a lower one is stale,
  ignored with a log line;
- a missing document (no annotation yet, no file yet, annotation removed, Pod deleted) changes
  nothing: the last accepted state stays in force.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import DesiredState

log = logging.getLogger(__name__)


# --- deciding what a document means (pure) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a desired-state document was refused; ``message`` is what the worker reports as its error."""

    field: str
    message: str
    origin: str  # where the document came from, e.g. "pod ns/name annotation warmserve.io/desired"


@dataclass(frozen=True, slots=True)
class Accept:
    state: DesiredState


@dataclass(frozen=True, slots=True)
class Ignore:
    generation: int
    accepted: int  # the generation accepted before; ``generation < accepted`` means stale


@dataclass(frozen=True, slots=True)
class Reject:
    rejection: Rejection


Verdict = Accept | Ignore | Reject


#: A worker's own checks of a parsed document (its GPU count, say): raise :class:`InvalidFieldError`.
Check = Callable[[DesiredState], None]


def judge(
    text: str | bytes, *, worker: str, accepted: int, origin: str, check: Check | None = None
) -> Verdict:
    """Decide what a raw document means to ``worker``, given the generation accepted so far (-1: none).

    ``check`` adds the worker's own rules; a document it refuses is rejected like a malformed one.
    """
    try:
        state = DesiredState.from_json(text)
        if state.worker != worker:
            raise InvalidFieldError("worker", f"this worker's name {worker!r}", state.worker)
        if check is not None:
            check(state)
    except InvalidFieldError as exc:
        return Reject(Rejection(field=exc.field, message=str(exc), origin=origin))
    if state.generation <= accepted:
        return Ignore(generation=state.generation, accepted=accepted)
    return Accept(state)


# --- the one interface every channel offers -----------------------------------------------------


class DesiredSource(Protocol):
    """What the worker consumes: accepted states in order, and why the latest document was refused."""

    @property
    def rejection(self) -> Rejection | None: ...

    def __aiter__(self) -> DesiredFeed: ...


class DesiredFeed:
    """Judges documents as they arrive and hands accepted states to one consumer.

    Call :meth:`offer` on the event loop that iterates the feed (threads use
    ``loop.call_soon_threadsafe``). Iteration waits for the next accepted state; it ends after
    :meth:`close`, and raises what a channel passed to :meth:`fail` (a channel that cannot go on).
    """

    def __init__(
        self, worker: str, on_reject: Callable[[Rejection], None] | None = None, check: Check | None = None
    ) -> None:
        self.worker = worker
        self.check = check
        self.rejection: Rejection | None = None
        self.last_verdict: Verdict | None = None
        self._on_reject = on_reject
        self._accepted = -1
        self._pending: DesiredState | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self._wake = asyncio.Event()

    @property
    def generation(self) -> int:
        """The generation last accepted (-1: none yet)."""
        return self._accepted

    def offer(self, text: str | bytes, origin: str) -> Verdict:
        """Judge one raw document; queue it if accepted, record (and report) it if rejected."""
        verdict = judge(text, worker=self.worker, accepted=self._accepted, origin=origin, check=self.check)
        self.last_verdict = verdict
        match verdict:
            case Accept(state):
                self._accepted = state.generation
                self._pending = state
                self.rejection = None
                self._wake.set()
            case Ignore(generation, accepted) if generation < accepted:
                log.warning(
                    "ignoring stale desired generation %d from %s: %d accepted", generation, origin, accepted
                )
            case Ignore():
                self.rejection = None
            case Reject(rejection):
                log.warning("rejected desired state from %s: %s", origin, rejection.message)
                self.rejection = rejection
                if self._on_reject is not None:
                    self._on_reject(rejection)
        return verdict

    def fail(self, error: BaseException) -> None:
        """End iteration with ``error`` once the pending state, if any, has been taken."""
        self._failure = error
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def __aiter__(self) -> DesiredFeed:
        return self

    async def __anext__(self) -> DesiredState:
        while self._pending is None:
            if self._failure is not None:
                raise self._failure
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        state, self._pending = self._pending, None
        return state
