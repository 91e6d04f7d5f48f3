"""The ``warmserve gateway`` subcommand: run the OpenAI-compatible front door.

``warmserve gateway --port 8080 --worker http://10.0.0.5:8000 --model llama-8b:16 --model qwen-7b``
serves the declared models (``NAME`` or ``NAME:B``, B the requests per instance at once) from the
serving replicas of the given workers, until interrupted. In a cluster, ``--discover-namespace NS`` finds
the workers instead: the ready worker Pods of NS (``--worker-selector``, by default every WarmServe worker
Pod), followed by a list-then-watch of the API server. A bad option is reported in one line naming it.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from warmserve.gateway.app import Gateway, run
from warmserve.gateway.config import DEFAULT_MAX_CONCURRENCY, GatewayConfig, parse_model_arg
from warmserve.protocol.errors import InvalidFieldError, InvalidInputError


def register(subparsers: Any) -> None:
    """Add the ``gateway`` subcommand to the `warmserve` parser."""
    defaults = GatewayConfig(models=())
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "gateway", help="run the OpenAI-compatible gateway in front of the workers", description=__doc__
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default %(default)s)")
    parser.add_argument(
        "--worker", action="append", default=[], metavar="URL", help="a worker's base URL (repeatable)"
    )
    parser.add_argument(
        "--discover-namespace",
        metavar="NS",
        help="find the workers as the ready worker Pods of namespace NS (instead of --worker)",
    )
    parser.add_argument(
        "--worker-selector",
        default=defaults.worker_selector,
        metavar="SELECTOR",
        help="with --discover-namespace: the worker Pods' label selector (default %(default)s)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME[:B]",
        help=f"a model to serve and B, its requests per instance (B defaults to {DEFAULT_MAX_CONCURRENCY});"
        " not with --discover-namespace, whose ModelDeployments are the models",
    )
    parser.add_argument(
        "--queue-limit",
        type=int,
        default=defaults.queue_limit,
        help="requests held per model at most; beyond it 503 at once (default %(default)s)",
    )
    parser.add_argument(
        "--hold-timeout",
        type=float,
        default=defaults.hold_timeout_s,
        help="seconds a request may wait for a free instance before 503 (default %(default)s)",
    )
    parser.add_argument(
        "--retry-after",
        type=int,
        default=defaults.retry_after_s,
        help="the Retry-After seconds of a 503 (default %(default)s)",
    )
    parser.add_argument(
        "--upstream-timeout",
        type=float,
        default=defaults.upstream_read_timeout_s,
        help="seconds a worker may stay silent on a request before it counts as failed (default %(default)s)",
    )
    parser.set_defaults(func=_run)


#: The option that sets each configuration field, so an error names what the user typed.
_OPTIONS = {
    "models": "--model",
    "workers": "--worker",
    "discover_namespace": "--discover-namespace",
    "worker_selector": "--worker-selector",
    "queue_limit": "--queue-limit",
    "hold_timeout_s": "--hold-timeout",
    "retry_after_s": "--retry-after",
    "upstream_read_timeout_s": "--upstream-timeout",
}


def _run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except InvalidFieldError as exc:
        option = _OPTIONS.get(exc.field.split("[")[0], exc.field)
        raise InvalidInputError(f"{option}: expected {exc.expected}, got {exc.got!r}") from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        run(Gateway(config), args.host, args.port)
    except OSError as exc:
        raise InvalidInputError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from exc
    return 0


def _config(args: argparse.Namespace) -> GatewayConfig:
    if not args.model and args.discover_namespace is None:
        raise InvalidInputError("--model: expected at least one NAME[:B] (or --discover-namespace), got none")
    if args.model and args.discover_namespace is not None:
        raise InvalidInputError(
            "--model and --discover-namespace: expected one of them (declared models, or the namespace's"
            " ModelDeployments), got both"
        )
    if not 0 < args.port < 65536:
        raise InvalidInputError(f"--port: expected 1 to 65535, got {args.port}")
    if args.worker and args.discover_namespace is not None:
        raise InvalidInputError(
            "--worker and --discover-namespace: expected one of them (static workers, or the worker Pods"
            " of a namespace), got both"
        )
    return GatewayConfig(
        models=tuple(parse_model_arg(m) for m in args.model),
        workers=tuple(args.worker),
        discover_namespace=args.discover_namespace,
        worker_selector=args.worker_selector,
        queue_limit=args.queue_limit,
        hold_timeout_s=args.hold_timeout,
        retry_after_s=args.retry_after,
        upstream_read_timeout_s=args.upstream_timeout,
    )
