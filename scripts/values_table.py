"""Prints the Helm values table of docs/install.md from charts/warmserve/values.schema.json and the defaults
in values.yaml (tests/chart/test_values_table.py keeps the page current):

    python3 scripts/values_table.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "warmserve"


def rows(schema: dict[str, Any], values: Any, definitions: dict[str, Any], prefix: str = "") -> list[str]:
    """One table row per leaf value, in the schema's order; objects without their own description are
    expanded into their fields."""
    out = []
    for name, prop in schema.get("properties", {}).items():
        ref = prop.get("$ref", "")
        resolved = {**definitions[ref.rsplit("/", 1)[-1]], **prop} if ref else prop
        key = f"{prefix}{name}"
        value = values.get(name) if isinstance(values, dict) else None
        if resolved.get("type") == "object" and "properties" in resolved:
            out += rows(resolved, value, definitions, f"{key}.")
            continue
        kind = resolved.get("type", "object")
        if "enum" in resolved:
            kind = " \\| ".join(f"`{e}`" for e in resolved["enum"])
        default = json.dumps(value) if value is not None else ""
        out.append(f"| `{key}` | {kind} | `{default}` | {resolved.get('description', '')} |")
    return out


def table() -> str:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    header = ["| Value | Type | Default | Meaning |", "| --- | --- | --- | --- |"]
    return "\n".join(header + rows(schema, values, schema.get("definitions", {}))) + "\n"


if __name__ == "__main__":
    print(table(), end="")
