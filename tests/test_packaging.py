"""What ``pip install warmserve`` pulls: the base install is the control plane, the gateway, the simulator
and the fake engine, none of which imports torch; the real engines' libraries come only with the extras,
and ``.[dev]`` keeps them for the tests."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
ENGINE_LIBRARIES = {"torch", "transformers", "tokenizers", "safetensors", "vllm", "cuda-python"}


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_base_install_pulls_no_engine_library() -> None:
    assert not names(PYPROJECT["project"]["dependencies"]) & ENGINE_LIBRARIES


def test_the_extras_bring_the_engines_and_dev_brings_torch() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"torch", "transformers", "tokenizers", "safetensors"} <= names(extras["torch"])
    for extra in ("vllm", "gpu", "dev"):
        assert "warmserve[torch]" in extras[extra], extra


def test_the_checkpoints_module_of_warmserve_local_imports_without_torch() -> None:
    """``warmserve`` (every subcommand) imports ``warmserve.local.cli``, which imports the checkpoints
    module: torch must wait until a torch or vLLM run makes checkpoints."""
    script = "import sys; sys.modules['torch'] = None; import warmserve.local.checkpoints"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
