"""The ``warmserve operator`` subcommand: the Kubernetes operator of one namespace (docs/operator.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from warmserve.operator.kube.operator import OPERATOR_POLICIES, OperatorOptions, operate
from warmserve.protocol.errors import InvalidFieldError

DEFAULTS = OperatorOptions(namespace="")


def register(subparsers: Any) -> None:
    """Add the ``operator`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator: WorkerPool and ModelDeployment handlers and the scheduler",
        description="Run the kopf handlers of one namespace's WorkerPool and ModelDeployment resources and "
        "the scheduler loop over its worker Pods, until SIGTERM.",
    )
    parser.add_argument("--namespace", required=True, help="the namespace whose resources it manages")
    parser.add_argument(
        "--tick",
        type=float,
        default=DEFAULTS.tick_s,
        help="seconds between scheduler ticks (default %(default)s)",
    )
    parser.add_argument(
        "--policy",
        default=DEFAULTS.policy,
        help=f"the scheduling policy, one of {list(OPERATOR_POLICIES)} (default %(default)s)",
    )
    parser.add_argument(
        "--status-interval",
        type=float,
        default=DEFAULTS.status_interval_s,
        help="seconds between status updates of each resource (default %(default)s)",
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help="join kopf's peering NAME (a KopfPeering object) instead of running standalone",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    for option, value in (("--tick", args.tick), ("--status-interval", args.status_interval)):
        if value <= 0:
            raise InvalidFieldError(option, "a number of seconds > 0", value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not every timer's success, every second
    options = OperatorOptions(args.namespace, args.tick, args.policy, args.status_interval, args.peering)
    asyncio.run(operate(options))
    return 0
