"""Running a parsed subcommand: the one place where an error becomes one line and an exit code.

Bad input exits :data:`~warmserve.protocol.errors.EXIT_INVALID` (2), a temporary failure (a child process
that crashed, a peer out of reach) :data:`~warmserve.protocol.errors.EXIT_UNAVAILABLE` (75), so a script
can tell a typo from a run worth repeating. Shared by the full ``warmserve`` command and
``python -m warmserve.worker``; it imports nothing but the error types.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from warmserve.protocol.errors import EXIT_INVALID, EXIT_UNAVAILABLE, UnavailableError, WarmServeError


def run_parsed(args: argparse.Namespace) -> int:
    """Run a parsed subcommand (its ``func``). Errors print ``warmserve: error: ...`` (bad input, exit 2)
    or ``warmserve: unavailable: ...`` (temporary, exit 75); Ctrl-C prints one line and exits 130; a closed
    output pipe ends quietly with 141 (128 + SIGPIPE)."""
    try:
        code: int = args.func(args)
    except UnavailableError as exc:
        print(f"warmserve: unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except WarmServeError as exc:  # bad input anywhere: one line naming what is wrong, never a traceback
        print(f"warmserve: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("warmserve: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): end quietly, as the shell's tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush cannot fail again
        return 141
    return code


def output_file(text: str) -> Path:
    """An argparse ``type`` for an output file: checked when the options are parsed, so an unwritable path
    is a one-line error before the run rather than after it. Raises ``argparse.ArgumentTypeError`` (the
    parser names the option) for a folder, a missing parent folder or a path the user may not write."""
    path = Path(text)
    parent = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, expected a file name")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: folder {parent} does not exist")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: permission denied")
    return path
