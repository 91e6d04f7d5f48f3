"""Running a parsed subcommand: the one place where bad input becomes one line and exit code 2.

Shared by the full ``warmserve`` command and ``python -m warmserve.worker``; it imports nothing but the
error types, so the forecasting CLI (which reuses the top-level parser) does not pull in the worker.
"""

from __future__ import annotations

import argparse
import sys

from warmserve.protocol.errors import WarmServeError


def run_parsed(args: argparse.Namespace) -> int:
    """Run a parsed subcommand (its ``func``); user errors print ``warmserve: error: ...`` and exit 2,
    Ctrl-C prints one line and exits 130."""
    try:
        code: int = args.func(args)
    except WarmServeError as exc:  # bad input anywhere: one line naming what is wrong, never a traceback
        print(f"warmserve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("warmserve: interrupted", file=sys.stderr)
        return 130
    return code
