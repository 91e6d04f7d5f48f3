"""The purity contract (pyproject.toml) lists the pure modules of the control plane and the protocol one by
one, so that the Kubernetes adapter may import the client. A module added later must join the list: this
test fails until it does, rather than let it escape the contract unseen."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PURE = "The control plane and the protocol are pure"
#: The only modules of the two packages that speak to the API server (docs/architecture.md); the worker's
#: contract keeps the last two free of the kubernetes client.
CLIENT_SIDE = {
    "warmserve.operator.kube",
    "warmserve.protocol.kube_api",
    "warmserve.protocol.kube_http",
    "warmserve.protocol.list_watch",
}


def test_every_module_but_the_kubernetes_ones_is_held_pure_by_the_contract() -> None:
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (pure,) = [c for c in contracts if c["name"].startswith(PURE)]
    modules = {
        f"warmserve.{portion}.{module.name}"
        for portion in ("operator", "protocol")
        for module in pkgutil.iter_modules([str(REPO / portion / "warmserve" / portion)])
    }
    assert modules >= CLIENT_SIDE
    assert set(pure["source_modules"]) == modules - CLIENT_SIDE
