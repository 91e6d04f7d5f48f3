"""The `warmserve` command: one entry point, one subcommand per job.

Each subcommand lives beside the code it drives, in a module that exposes
``register(subparsers) -> None``; registering sets ``func`` (``args -> exit code``) on its parser. This
module is the only one that knows them all: it sits above every component (docs/architecture.md), so no
component depends on another to be on the command line. Only the module of the subcommand named is
imported (all of them for ``warmserve --help`` or a name it does not know), so a worker or a gateway
process does not load what the others need (the trace readers' pandas). Optional dependencies (vLLM,
torch) are imported only when their subcommand runs, so a missing one fails with its own clear message
there, not at start-up. Errors become one line and an exit code in
:func:`~warmserve.protocol.command.run_parsed`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from warmserve.protocol.command import CommandParser, run_parsed

#: Each subcommand and the module that registers it, in the order `warmserve --help` lists them (a test
#: checks the modules register exactly these).
SUBCOMMANDS = {
    "forecast": "warmserve.operator.forecast.cli",
    "simulate": "warmserve.sim.cli",
    "worker": "warmserve.worker.cli",
    "make-tiny-model": "warmserve.worker.cli",
    "gateway": "warmserve.gateway.cli",
    "local": "warmserve.local.cli",
    "operator": "warmserve.operator.kube.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the parser from the module of subcommand ``command``, or from every subcommand module when
    it is ``None`` or not one of :data:`SUBCOMMANDS` (so ``--help`` and the error list them all). Their
    parsers are of the same class."""
    parser = CommandParser(prog="warmserve", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = SUBCOMMANDS.get(command or "")
    for name in [chosen] if chosen else dict.fromkeys(SUBCOMMANDS.values()):
        importlib.import_module(name).register(subparsers)
    return parser


def named_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first argument that is not an option (the top level's options,
    ``--help`` and ``--version``, take no value); ``None`` when there is none."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _version() -> str:
    try:
        return version("warmserve")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; bad input exits 2, a temporary failure 75 (see run_parsed)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return run_parsed(build_parser(named_command(args)).parse_args(args))


if __name__ == "__main__":
    sys.exit(main())
