"""The `warmserve` command: one entry point, one subcommand per job.

Each subcommand lives beside the code it drives, in a module that exposes
``register(subparsers) -> None``; registering sets ``func`` (``args -> exit code``) on its parser. This
module is the only one that knows them all: it sits above every component (docs/architecture.md), so no
component depends on another to be on the command line. Optional dependencies (vLLM, torch) are
imported only when their subcommand runs, so a missing one fails with its own clear message there, not at
start-up. Errors become one line and an exit code in :func:`~warmserve.protocol.command.run_parsed`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from warmserve.gateway import cli as gateway_cli
from warmserve.local import cli as local_cli
from warmserve.operator.forecast import cli as forecast_cli
from warmserve.operator.kube import cli as operator_cli
from warmserve.protocol.command import CommandParser, run_parsed
from warmserve.sim import cli as sim_cli
from warmserve.worker import cli as worker_cli

#: The modules that contribute subcommands, in the order `warmserve --help` lists them.
SUBCOMMANDS = (forecast_cli, sim_cli, worker_cli, gateway_cli, local_cli, operator_cli)


def build_parser() -> argparse.ArgumentParser:
    """Build the parser from every subcommand module (their parsers are of the same class)."""
    parser = CommandParser(prog="warmserve", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def _version() -> str:
    try:
        return version("warmserve")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; bad input exits 2, a temporary failure 75 (see run_parsed)."""
    return run_parsed(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
