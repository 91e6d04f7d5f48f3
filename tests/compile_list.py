"""The modules ``hatch_build.py`` compiles with mypyc, as listed in pyproject.toml (dotted names)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compiled_module_names() -> list[str]:
    """``operator/warmserve/operator/planning/plan.py`` is ``warmserve.operator.planning.plan``; sorted."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["custom"]["compile"]
    return sorted(".".join(Path(p).relative_to(Path(p).parts[0]).with_suffix("").parts) for p in listed)
