"""Where the control plane's binaries are: ``e2e/cluster/build.sh`` builds them (or finds them cached)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "cluster" / "build.sh"


class MissingToolError(RuntimeError):
    """A tool the control plane needs is absent (Go, to build it); the message names it."""


@dataclass(frozen=True, slots=True)
class Binaries:
    """The directories holding each component's binaries, one per version."""

    k8s: Path
    etcd: Path
    helm: Path

    @property
    def kubectl(self) -> Path:
        return self.k8s / "kubectl"


def cluster_binaries() -> Binaries:
    """Runs ``build.sh`` (seconds when everything is cached) and returns where the binaries are.

    Raises :class:`MissingToolError` when Go is missing, and ``RuntimeError`` with the script's output when
    the build fails.
    """
    if shutil.which("go") is None:
        raise MissingToolError(
            "Go is not installed (needed to build kube-apiserver, etcd and helm from source)"
        )
    done = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    k8s, etcd, helm = (Path(line) for line in done.stdout.split())
    return Binaries(k8s=k8s, etcd=etcd, helm=helm)
