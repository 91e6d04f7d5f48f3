"""The worker's subcommands of the `warmserve` command.

``warmserve worker``: run one universal worker (:mod:`warmserve.worker.process`) until SIGTERM/SIGINT; bad
options are reported as one line naming the option, before anything is allocated.

``warmserve make-tiny-model DIR``: write a small real Llama checkpoint and tokenizer (no hub) for tests
and demos; bad sizes or a non-empty DIR are reported as one line naming the option.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from warmserve.protocol.state import CONTROL_TOKEN_ENV
from warmserve.worker import process
from warmserve.worker.timing import Tier
from warmserve.worker.tiny_model import TinyModelSize, make_tiny_model


def register(subparsers: Any) -> None:
    """Add the worker's subcommands to the `warmserve` parser."""
    _register_worker(subparsers)
    _register_make_tiny_model(subparsers)


def _register_worker(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "worker",
        help="run a universal worker: pools, engine, OpenAI HTTP server, desired/observed state",
        description=process.__doc__,
    )
    add = parser.add_argument
    add("--name", default=None, help="worker name (default: $POD_NAME, else the hostname)")
    add("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    add("--port", type=int, default=8000, help="HTTP port (default %(default)s)")
    add("--endpoint", default=None, help="URL others reach this worker at (default: http://HOST:PORT)")
    add("--gpus", type=int, default=1, help="GPUs of this worker (default %(default)s)")
    add(
        "--gpu-memory",
        default="80GiB",
        help="pool size per GPU: 80GiB, 512MiB or bytes (default %(default)s)",
    )
    add("--engine", default="fake", choices=process.ENGINES, help="engine (default %(default)s)")
    add(
        "--pool", default=None, choices=process.POOLS, help="pool backend (default: fake/host/cuda by engine)"
    )
    add("--store", type=Path, default=None, help="the node-local model store (needed by host and cuda pools)")
    add("--gpu-profile", default="h100", help="GPU timing profile of the fake engine (default %(default)s)")
    add("--tier", default=Tier.HOST.value, choices=[t.value for t in Tier], help="fake engine's weight tier")
    add(
        "--speed",
        type=float,
        default=1.0,
        help="fake engine delay multiplier, 0 = none (default %(default)s)",
    )
    add("--threads", type=int, default=None, help="torch intra-op threads (torch engine; default: up to 2)")
    add("--desired-file", type=Path, default=None, help="follow this desired-state JSON file (local runner)")
    add(
        "--observed-file",
        type=Path,
        default=None,
        help="write the observed state to this file (local runner)",
    )
    add(
        "--control-token",
        default=os.environ.get(CONTROL_TOKEN_ENV, ""),
        help=(
            f"the bearer token PUT /desired must send (default: ${CONTROL_TOKEN_ENV}; empty: anyone may, "
            "or nobody with --kube)"
        ),
    )
    add("--kube", action="store_true", help="follow and report through the own Pod's annotations")
    add("--kube-api", default=None, help="API server URL (default: in-cluster, else kubeconfig)")
    parser.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    options = process.WorkerOptions(
        name=args.name or process.default_name(),
        gpus=args.gpus,
        gpu_memory_bytes=process.parse_size(args.gpu_memory),
        host=args.host,
        port=args.port,
        engine=args.engine,
        pool=args.pool,
        store=args.store,
        gpu_profile=args.gpu_profile,
        tier=Tier(args.tier),
        speed=args.speed,
        threads=args.threads,
        desired_file=args.desired_file,
        observed_file=args.observed_file,
        kube=args.kube,
        kube_api=args.kube_api,
        endpoint=args.endpoint,
        control_token=args.control_token,
    )
    return process.run(options)


def _register_make_tiny_model(subparsers: Any) -> None:
    defaults = TinyModelSize()
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "make-tiny-model",
        help="write a tiny Llama checkpoint and tokenizer (made locally, no hub) to DIR",
        description=make_tiny_model.__doc__,
    )
    parser.add_argument("directory", metavar="DIR", type=Path, help="a new or empty directory")
    parser.add_argument(
        "--hidden", type=int, default=defaults.hidden, help="hidden size (default %(default)s)"
    )
    parser.add_argument(
        "--layers", type=int, default=defaults.layers, help="decoder layers (default %(default)s)"
    )
    parser.add_argument(
        "--heads", type=int, default=defaults.heads, help="attention heads (default %(default)s)"
    )
    parser.add_argument("--intermediate", type=int, default=None, help="MLP size (default: 2 × hidden)")
    parser.add_argument("--vocab", type=int, default=defaults.vocab, help="vocabulary (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed (default %(default)s)")
    parser.set_defaults(func=_make_tiny_model)


def _make_tiny_model(args: argparse.Namespace) -> int:
    size = TinyModelSize(
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        intermediate=args.intermediate if args.intermediate is not None else 2 * args.hidden,
        vocab=args.vocab,
    )
    directory = make_tiny_model(args.directory, size, seed=args.seed)
    print(directory)
    return 0
