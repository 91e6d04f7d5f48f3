"""Running a parsed subcommand: the one place where an error becomes one line and an exit code.

Bad input exits :data:`~warmserve.protocol.errors.EXIT_INVALID` (2), a temporary failure (a child process
that crashed, a peer out of reach) :data:`~warmserve.protocol.errors.EXIT_UNAVAILABLE` (75), so a script
can tell a typo from a run worth repeating. Shared by the full ``warmserve`` command and
``python -m warmserve.worker``; it imports nothing but the error types.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from warmserve.protocol.errors import EXIT_INVALID, EXIT_UNAVAILABLE, UnavailableError, WarmServeError

N = TypeVar("N", int, float)


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default (unless its help already speaks of one, or there is none to
    show), keeps the description's paragraphs apart, and never breaks a name at its hyphens."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or "default" in text
            or action.default in (None, False, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"

    def _split_lines(self, text: str, width: int) -> list[str]:
        """Wrap at spaces only: names like ``seasonal-naive-7d`` stay whole."""
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Each paragraph, and each ``- `` item of a list, wrapped on its own."""
        blocks = []
        for paragraph in re.split(r"\n\s*\n", text.strip()):
            items = re.split(r"\n\s*(?=[-*] )", paragraph.strip())
            blocks.append("\n".join(self._fill_item(item, width, indent) for item in items))
        return "\n\n".join(blocks)

    @staticmethod
    def _fill_item(item: str, width: int, indent: str) -> str:
        hang = "  " if item[:2] in ("- ", "* ") else ""
        return textwrap.fill(
            " ".join(item.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent + hang,
            break_on_hyphens=False,
        )


class CommandParser(argparse.ArgumentParser):
    """The parser of every ``warmserve`` command and subcommand: errors are one line pointing at
    ``--help`` (like every other user error of the command), help shows defaults, and a description taken
    from a docstring is shown without its reStructuredText markup."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        if kwargs.get("description"):
            kwargs["description"] = plain_text(kwargs["description"])
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def plain_text(docstring: str) -> str:
    """``docstring`` without roles (``:class:`~a.B``` becomes ``B``) and double backquotes."""
    text = re.sub(r":\w+:`~[\w.]*?(\w+)`", r"\1", docstring)
    text = re.sub(r":\w+:`([^`]+)`", r"\1", text)
    return text.replace("``", "")


def run_parsed(args: argparse.Namespace) -> int:
    """Run a parsed subcommand (its ``func``). Errors print ``warmserve: error: ...`` (bad input, exit 2)
    or ``warmserve: unavailable: ...`` (temporary, exit 75); Ctrl-C prints one line and exits 130; a closed
    output pipe ends quietly with 141 (128 + SIGPIPE)."""
    try:
        code: int = args.func(args)
    except UnavailableError as exc:
        print(f"warmserve: unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except WarmServeError as exc:  # bad input anywhere: one line naming what is wrong, never a traceback
        print(f"warmserve: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("warmserve: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): end quietly, as the shell's tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush cannot fail again
        return 141
    return code


def output_file(text: str) -> Path:
    """An argparse ``type`` for an output file: checked when the options are parsed, so an unwritable path
    is a one-line error before the run rather than after it. Raises ``argparse.ArgumentTypeError`` (the
    parser names the option) for a folder, a missing parent folder or a path the user may not write."""
    path = Path(text)
    parent = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, expected a file name")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: folder {parent} does not exist")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: permission denied")
    return path


def bounded(kind: type[N], low: float, high: float = math.inf, *, strict: bool = False) -> Callable[[str], N]:
    """An argparse ``type``: a finite ``kind`` (int or float) at least ``low`` and at most ``high`` (strictly
    between them if ``strict``), so a value out of range is a one-line error naming the option as typed,
    before any work."""
    relation = ">" if strict else ">="
    noun = "an integer" if kind is int else "a number"
    expected = f"{noun} {relation} {low:g}"
    if high != math.inf:
        expected += f" and {'<' if strict else '<='} {high:g}"

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            value = None
        inside = value is not None and math.isfinite(value) and low <= value <= high
        if value is None or not inside or (strict and value in (low, high)):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse
