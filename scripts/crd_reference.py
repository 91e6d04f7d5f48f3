"""Prints docs/crd-reference.md, the field reference of every CRD in crds/, generated from their schemas
(tests/crds/test_crd_reference.py keeps the page current):

    python3 scripts/crd_reference.py > docs/crd-reference.md

One table per kind and section (spec, status): each field's path, type, default, what it accepts (enum,
bounds, pattern) and its description, then the CEL rules with their messages. The narrative — what each
field means to the scheduler — is docs/resources.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
HEADER = """# CRD reference

Generated from the schemas in `crds/` by `python3 scripts/crd_reference.py > docs/crd-reference.md`; a test
keeps it current. What the fields mean to the scheduler, with examples: [resources.md](resources.md).
"""


def _type(prop: dict[str, Any]) -> str:
    """The field's type as a reader says it: int-or-string quantities, typed lists and maps."""
    if prop.get("x-kubernetes-int-or-string"):
        return "integer or string"
    kind = str(prop.get("type", "any"))
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map of {_type(prop['additionalProperties'])}"
    return kind


def _accepts(prop: dict[str, Any]) -> str:
    """Enum, bounds, lengths and pattern, in one cell."""
    parts = []
    if "enum" in prop:
        parts.append(", ".join(f"`{e}`" for e in prop["enum"]))
    bounds = [("minimum", "≥"), ("maximum", "≤"), ("minLength", "length ≥"), ("maxLength", "length ≤")]
    parts += [f"{word} {prop[key]}" for key, word in bounds if key in prop]
    if "pattern" in prop:
        parts.append(f"`{prop['pattern']}`".replace("|", "\\|"))
    return "; ".join(parts)


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _rows(schema: dict[str, Any], prefix: str, rules: list[str]) -> list[str]:
    """One row per field, depth first in the schema's order; CEL rules collected into ``rules``."""
    out = []
    for rule in schema.get("x-kubernetes-validations", []):
        rules.append(f"| `{prefix or '.'}` | `{_cell(rule['rule'])}` | {_cell(rule.get('message', ''))} |")
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
        mark = " (required)" if name in required else ""
        cells = [f"`{path}`{mark}", _type(prop), default, _accepts(prop), _cell(prop.get("description", ""))]
        out.append(f"| {' | '.join(cells)} |")
        items = prop.get("items", {})
        if items.get("type") == "object":
            out += _rows(items, f"{path}[]", rules)
        else:
            out += _rows(prop, path, rules)
    return out


def _kind(crd: dict[str, Any]) -> str:
    """The section of one CRD: its names, then a field table and a rule table per top-level section."""
    names = crd["spec"]["names"]
    version = crd["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    lines = [
        f"## {names['kind']}",
        "",
        f"`{crd['spec']['group']}/{version['name']}`, {crd['spec']['scope']}; plural `{names['plural']}`, "
        f"short names {', '.join(f'`{s}`' for s in names.get('shortNames', []))}, "
        f"categories {', '.join(f'`{c}`' for c in names.get('categories', []))}. "
        + _cell(root.get("description", "")),
    ]
    root_rules = [
        f"- `{_cell(r['rule'])}`: {_cell(r.get('message', ''))}"
        for r in root.get("x-kubernetes-validations", [])
    ]
    if root_rules:
        lines += ["", "Rules (CEL) on the whole object:", "", *root_rules]
    for section in ("spec", "status"):
        prop = root["properties"].get(section)
        if prop is None:
            continue
        rules: list[str] = []
        head = ["| field | type | default | accepts | description |", "| --- | --- | --- | --- | --- |"]
        lines += ["", f"### `{section}`", "", _cell(prop.get("description", "")), ""]
        lines += head + _rows(prop, section, rules)
        if rules:
            lines += ["", "Rules (CEL), checked by the API server:", "", "| on | rule | message |"]
            lines += ["| --- | --- | --- |", *rules]
    return "\n".join(lines) + "\n"


def reference() -> str:
    """The whole page: every CRD in crds/, in file name order."""
    crds = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]
    return "\n".join([HEADER, *(_kind(crd) for crd in crds)])


if __name__ == "__main__":
    print(reference(), end="")
