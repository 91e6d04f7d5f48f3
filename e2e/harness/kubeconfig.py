"""Kubeconfig files for the admin, the control-plane components and each Pod."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_kubeconfig(path: Path, server: str, ca: Path, user: dict[str, str]) -> Path:
    """Writes a one-context kubeconfig (``user``: client-certificate/client-key or token entries)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "warmserve-test", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "warmserve-test", "context": {"cluster": "warmserve-test", "user": "user"}}],
        "current-context": "warmserve-test",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
