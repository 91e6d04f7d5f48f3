"""The real ``helm`` binary (built by ``e2e/cluster/build.sh``) run on ``charts/warmserve``, with its caches
and configuration in a directory of the test's own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness.binaries import MissingToolError, cluster_binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "warmserve"


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    """The helm binary; skips naming what is missing when it cannot be built here."""
    try:
        return cluster_binaries().helm / "helm"
    except MissingToolError as exc:
        pytest.skip(f"no helm binary: {exc}")


def helm(binary: Path, home: Path, *args: str, kubeconfig: Path | None = None) -> str:
    """Runs helm; fails the test with helm's stderr when it exits non-zero."""
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    done = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def rendered(binary: Path, home: Path, *sets: str) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders with the ``--set`` values given."""
    args = [a for s in sets for a in ("--set", s)]
    out = helm(binary, home, "template", "t", str(CHART), "--namespace", "ns", *args)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)
