"""The CRDs and examples as the tests read them, and the API server's defaulting done offline.

:func:`with_defaults` fills in an object's defaults from its CRD's structural schema the way the API server
does (a missing property with a ``default`` gets it, then its own properties are defaulted in turn), so that
the pure parsing tests see objects as the operator will; ``test_crds_api.py`` checks that the server returns
exactly what it computes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples"


def crd(kind: str) -> dict[str, Any]:
    """The CRD of ``kind`` from ``crds/``."""
    for path in sorted(CRDS.glob("*.yaml")):
        doc: dict[str, Any] = yaml.safe_load(path.read_text())
        if doc["spec"]["names"]["kind"] == kind:
            return doc
    raise LookupError(f"no CRD of kind {kind} in {CRDS}")


def schema(kind: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the one version of ``kind``."""
    (version,) = crd(kind)["spec"]["versions"]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def examples() -> dict[str, dict[str, Any]]:
    """Every manifest under ``examples/`` by file name."""
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(EXAMPLES.glob("*.yaml"))}


def example(kind: str, name: str) -> dict[str, Any]:
    """The example object of ``kind`` called ``name``, with its defaults filled in and a namespace."""
    for doc in examples().values():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            obj = with_defaults(doc)
            obj["metadata"].setdefault("namespace", "default")
            return obj
    raise LookupError(f"no example {kind}/{name}")


def with_defaults(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` with every default of its kind's schema filled in."""
    out = copy.deepcopy(obj)
    _default(out, schema(obj["kind"]))
    return out


def _default(value: Any, node: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for name, prop in node.get("properties", {}).items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                _default(value[name], prop)
        if isinstance(node.get("additionalProperties"), dict):
            for item in value.values():
                _default(item, node["additionalProperties"])
    elif isinstance(value, list) and "items" in node:
        for item in value:
            _default(item, node["items"])
