"""docs/tutorial.md works as written: every ``$`` command of its console blocks runs, in order, in a fresh
folder, and ends with exit code 0."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"


def commands() -> list[str]:
    """The ``$ `` lines of the tutorial's ``console`` blocks, in order."""
    blocks = re.findall(r"```console\n(.*?)```", TUTORIAL.read_text(), flags=re.S)
    return [line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ ")]


def test_the_tutorial_has_its_commands() -> None:
    assert [c.split()[:2] for c in commands()] == [
        ["python3", "examples/make_requests_log.py"],
        ["warmserve", "--help"],
        ["warmserve", "forecast"],
        ["warmserve", "simulate"],
        ["warmserve", "local"],
    ]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_command_of_the_tutorial_runs(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for command in commands():
        argv = shlex.split(command)
        if argv[0] == "warmserve":  # the checkout's command, whatever is on PATH
            argv = [sys.executable, "-m", "warmserve.cli", *argv[1:]]
        elif argv[0] == "python3":
            argv[0] = sys.executable
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        if argv[-1] == "--no-progress":
            assert "warmserve" in done.stdout and "autoscale" in done.stdout, command
