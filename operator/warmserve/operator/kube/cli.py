"""The ``warmserve operator`` subcommand: the Kubernetes operator of one namespace (docs/operator.md).

kopf and the handlers are imported when the subcommand runs, not when ``warmserve`` builds its parser.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

#: Mirrors :class:`~warmserve.operator.kube.operator.OperatorOptions`' defaults (kept light to import).
DEFAULT_TICK_S = 1.0
DEFAULT_STATUS_INTERVAL_S = 2.0


def register(subparsers: Any) -> None:
    """Add the ``operator`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator: WorkerPool and ModelDeployment handlers and the scheduler",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--namespace", required=True, help="the namespace whose resources it manages")
    parser.add_argument(
        "--tick",
        type=float,
        default=DEFAULT_TICK_S,
        help="seconds between scheduler ticks (default %(default)s)",
    )
    parser.add_argument(
        "--policy",
        default="warmserve",
        help="the scheduling policy (default %(default)s; see docs/operator.md)",
    )
    parser.add_argument(
        "--status-interval",
        type=float,
        default=DEFAULT_STATUS_INTERVAL_S,
        help="seconds between status updates of each resource (default %(default)s)",
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help="join kopf's peering NAME (a KopfPeering object) instead of running standalone",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from warmserve.operator.kube.operator import OperatorOptions, operate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not every timer's success, every second
    if args.tick <= 0 or args.status_interval <= 0:
        from warmserve.protocol.errors import InvalidFieldError

        bad = "tick" if args.tick <= 0 else "status-interval"
        raise InvalidFieldError(f"--{bad}", "a number of seconds > 0", getattr(args, bad.replace("-", "_")))
    options = OperatorOptions(args.namespace, args.tick, args.policy, args.status_interval, args.peering)
    asyncio.run(operate(options))
    return 0
