"""The `warmserve` command: one entry point, one subcommand per job.

Each subcommand lives beside the code it drives, in a module that exposes
``register(subparsers) -> None``; registering sets ``func`` (``args -> exit code``) on its parser.
Optional dependencies (vLLM) are imported only when their subcommand runs, so a missing one fails with
its own clear message there, not at start-up.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from warmserve.protocol.command import run_parsed
from warmserve.protocol.errors import WarmServeError

#: Modules that contribute subcommands, in the order `warmserve --help` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "warmserve.operator.forecast.cli",
    "warmserve.sim.cli",
    "warmserve.worker.cli",
    "warmserve.gateway.cli",
    "warmserve.local.cli",
)


class CliError(WarmServeError):
    """A user error found by a subcommand itself (a bad option value, an unwritable output)."""


def build_parser() -> argparse.ArgumentParser:
    """Build the parser from every subcommand module."""
    parser = argparse.ArgumentParser(prog="warmserve", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; user errors print ``warmserve: error: ...`` and exit 2."""
    return run_parsed(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
