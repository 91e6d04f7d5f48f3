"""What the worker's and the gateway's HTTP endpoints accept as a request body, before parsing it.

- **Its type.** The OpenAI endpoints read a JSON body: a ``Content-Type`` header, when present, must name
  JSON (``application/json``, or a ``+json`` type); anything else (``text/plain``, a form) is refused with
  :class:`InvalidFieldError` on ``Content-Type`` (HTTP 400) instead of being parsed as JSON regardless.
  An absent header is accepted, as OpenAI's own servers do.
- **Its arrival.** A client that sent complete headers and then stalls its body would otherwise hold a
  handler (and, at the gateway, a queue slot) forever: the body must have arrived within ``timeout_s``
  (:data:`BODY_TIMEOUT_S` by default), else :class:`BodyTimeoutError` (HTTP 408, and the connection is
  closed: the rest of the body may still come).

The reading itself is the server's (this package does no I/O): :func:`read_body` bounds the awaitable the
server's framework gives for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from warmserve.protocol.errors import InvalidFieldError, InvalidInputError

#: Seconds a request body may take to arrive once the headers are in (a whole 8 MiB body crosses a slow
#: link in far less; a stalled one is a broken or hostile client).
BODY_TIMEOUT_S = 30.0


class BodyTimeoutError(InvalidInputError):
    """The request's body did not arrive in time; answered 408 on a connection then closed."""


def check_content_type(value: str | None) -> None:
    """Refuse a ``Content-Type`` header that names anything but JSON (absent: accepted)."""
    if value is None:
        return
    media = value.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise InvalidFieldError("Content-Type", "application/json (or no Content-Type header)", value)


async def read_body(read: Awaitable[bytes], timeout_s: float = BODY_TIMEOUT_S) -> bytes:
    """The body ``read`` yields, or :class:`BodyTimeoutError` once ``timeout_s`` passed without it."""
    try:
        async with asyncio.timeout(timeout_s):
            return await read
    except TimeoutError:
        raise BodyTimeoutError(f"body: not complete within {timeout_s:g} s after the headers") from None
