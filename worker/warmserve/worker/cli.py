"""The worker's subcommands of the `warmserve` command.

``warmserve make-tiny-model DIR``: write a small real Llama checkpoint and tokenizer (no hub) for tests
and demos; bad sizes or a non-empty DIR are reported as one line naming the option.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from warmserve.worker.tiny_model import TinyModelSize, make_tiny_model


def register(subparsers: Any) -> None:
    """Add the worker's subcommands to the `warmserve` parser."""
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
