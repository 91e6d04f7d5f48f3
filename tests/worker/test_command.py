"""Running a parsed subcommand: how its end looks to the user."""

from __future__ import annotations

import subprocess
import sys

PRINTS_A_LOT = """
import argparse, sys
from warmserve.protocol.command import run_parsed

def func(args):
    for i in range(200_000):
        print("row", i)
    return 0

sys.exit(run_parsed(argparse.Namespace(func=func)))
"""


def test_a_closed_output_pipe_ends_quietly() -> None:
    """`warmserve ... | head` must not end in a BrokenPipeError traceback."""
    shell = f"{sys.executable} -c '{PRINTS_A_LOT}' | head -n 1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=60)
    assert done.stdout == "row 0\n"
    assert done.stderr == ""
    assert done.returncode == 141


def test_version_is_printed() -> None:
    argv = [sys.executable, "-m", "warmserve.cli", "--version"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("warmserve ")


def test_a_malformed_option_value_is_one_line() -> None:
    argv = [sys.executable, "-m", "warmserve.cli", "forecast", "--window", "abc"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    message = "argument --window: expected a number > 0, got 'abc' (see warmserve forecast --help)"
    assert done.stderr.splitlines() == [f"warmserve forecast: error: {message}"]
