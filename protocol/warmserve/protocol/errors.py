"""The errors every WarmServe component raises on purpose, in two kinds by what the caller must do.

- :class:`InvalidInputError` — *permanent*: the input is wrong (a field of a document, a command-line
  option, a trace file, a checkpoint). The same input fails the same way, so nothing is retried: the CLI
  prints one line and exits 2, HTTP answers ``400``, the operator sets a ``Degraded`` condition (kopf's
  ``PermanentError``). :class:`InvalidFieldError` names the field.
- :class:`UnavailableError` — *temporary*: something the request needs is not there now (free memory, a
  serving replica, a queue slot, a child process, a reachable peer). The same request may succeed later:
  the CLI exits :data:`EXIT_UNAVAILABLE`, HTTP answers ``503`` with ``Retry-After``, the scheduler loop
  skips the tick, the operator retries (kopf's ``TemporaryError``).

Both derive from :class:`WarmServeError`, so a front end turns any of them into one clear line, a status
code or a condition — never a traceback. Raise one of the two kinds, never the base itself.
"""

from __future__ import annotations

#: The CLI's exit code for bad input (argparse's own for a bad option).
EXIT_INVALID = 2
#: The CLI's exit code for a temporary failure: sysexits' ``EX_TEMPFAIL`` ("try again later"), distinct
#: from 1, Python's exit code for a crash.
EXIT_UNAVAILABLE = 75


class WarmServeError(Exception):
    """Base class of both kinds; the message says what went wrong."""


class InvalidInputError(WarmServeError):
    """Permanent: bad input or an impossible request, explained in the message; retrying cannot help."""


class UnavailableError(WarmServeError):
    """Temporary: what the request needs is not available now; the same request may succeed later."""


class InvalidFieldError(InvalidInputError, ValueError):
    """A field of a document, snapshot or config holds a value it must not.

    ``field`` is a dotted path into the document (``replicas[2].gpus[0]``), ``expected`` says what
    would have been accepted, ``got`` is the offending value.
    """

    def __init__(self, field: str, expected: str, got: object) -> None:
        self.field = field
        self.expected = expected
        self.got = got
        super().__init__(f"{field}: expected {expected}, got {got!r}")
