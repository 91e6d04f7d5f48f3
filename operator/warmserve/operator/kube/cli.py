"""The ``warmserve operator`` subcommand: the Kubernetes operator of one namespace (docs/operator.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
from typing import Any

from warmserve.operator.kube.operator import OPERATOR_POLICIES, OperatorOptions, operate
from warmserve.protocol.command import bounded
from warmserve.protocol.errors import InvalidFieldError

DEFAULTS = OperatorOptions(namespace="")
#: An object name (a DNS-1123 subdomain), as the API server checks it.
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


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
        help="seconds between status updates of each WorkerPool (a ModelDeployment's follows each tick) "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--lease-name",
        type=object_name,
        default=DEFAULTS.lease_name,
        help="the Lease (coordination.k8s.io) in the namespace whose holder is the one active operator; "
        "the others wait as standbys (default %(default)s)",
    )
    parser.add_argument(
        "--lease-duration",
        type=bounded(int, 1),
        default=DEFAULTS.lease_duration_s,
        metavar="SECONDS",
        help="how long the Lease holds without a renewal: a standby takes over at most 1.4 times this "
        "long after the active operator is killed (default %(default)s)",
    )
    parser.add_argument(
        "--health-host",
        default=DEFAULTS.health_host,
        help="address the probes and metrics are served on (default %(default)s)",
    )
    parser.add_argument(
        "--health-port",
        type=port,
        default=DEFAULTS.health_port,
        help="port of /healthz, /readyz and /metrics (default %(default)s)",
    )
    parser.set_defaults(func=_run)


def object_name(text: str) -> str:
    """An argparse ``type``: a Kubernetes object name (lowercase DNS subdomain, at most 253 characters)."""
    if len(text) > 253 or not _OBJECT_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a Kubernetes object name (lowercase letters, digits, '-' and '.'), got {text!r}"
        )
    return text


def port(text: str) -> int:
    """An argparse ``type``: a TCP port, 1 to 65535."""
    value = bounded(int, 1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 1..65535, got {text!r}")
    return value


def _run(args: argparse.Namespace) -> int:
    for option, value in (("--tick", args.tick), ("--status-interval", args.status_interval)):
        if value <= 0:
            raise InvalidFieldError(option, "a number of seconds > 0", value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not every timer's success, every second
    options = OperatorOptions(
        args.namespace,
        args.tick,
        args.policy,
        args.status_interval,
        args.lease_name,
        args.lease_duration,
        args.health_host,
        args.health_port,
    )
    asyncio.run(operate(options))
    return 0
