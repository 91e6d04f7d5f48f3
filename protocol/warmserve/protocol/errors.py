"""Errors every WarmServe component raises for bad input.

All of them derive from :class:`WarmServeError`, so a front end (the CLI, an HTTP handler, a kopf
handler) can turn any of them into one clear line, a 400, or a status condition — never a traceback.
"""

from __future__ import annotations


class WarmServeError(Exception):
    """Base class: bad input or an impossible request, explained in the message."""


class InvalidFieldError(WarmServeError, ValueError):
    """A field of a document, snapshot or config holds a value it must not.

    ``field`` is a dotted path into the document (``replicas[2].gpus[0]``), ``expected`` says what
    would have been accepted, ``got`` is the offending value.
    """

    def __init__(self, field: str, expected: str, got: object) -> None:
        self.field = field
        self.expected = expected
        self.got = got
        super().__init__(f"{field}: expected {expected}, got {got!r}")
