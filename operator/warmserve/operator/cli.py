"""The `warmserve` command: one entry point, one subcommand per job.

Each subcommand lives beside the code it drives, in a module that exposes
``register(subparsers) -> None``; registering sets ``func`` (``args -> exit code``) on its parser.
Modules are imported only when the CLI starts, so a component whose optional dependency is missing
(vLLM, say) fails with its own clear message only when its subcommand is used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from warmserve.worker.errors import WarmServeError

#: Modules that contribute subcommands, in the order `warmserve --help` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "warmserve.operator.forecast.cli",
    "warmserve.sim.cli",
    "warmserve.worker.cli",
    "warmserve.gateway.cli",
    "warmserve.operator.local.cli",
)


class CliError(WarmServeError):
    """A user error found by a subcommand itself (a bad option value, an unwritable output)."""


def build_parser() -> argparse.ArgumentParser:
    """Build the parser from every subcommand module that exists in this installation."""
    parser = argparse.ArgumentParser(prog="warmserve", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (exc.name == name or name.startswith(exc.name + ".")):
                continue  # that component has no CLI (yet) in this installation
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; user errors print ``warmserve: error: ...`` and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except WarmServeError as exc:  # bad input anywhere: one line naming what is wrong, never a traceback
        print(f"warmserve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("warmserve: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
