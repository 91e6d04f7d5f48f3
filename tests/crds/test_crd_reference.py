"""docs/crd-reference.md is the page ``scripts/crd_reference.py`` generates from the CRDs in crds/."""

from __future__ import annotations

import runpy

from tests.chart.helm import REPO


def test_the_crd_reference_is_current() -> None:
    shown = (REPO / "docs" / "crd-reference.md").read_text()
    generated = runpy.run_path(str(REPO / "scripts" / "crd_reference.py"))["reference"]()
    assert shown == generated, "run python3 scripts/crd_reference.py > docs/crd-reference.md"


def test_every_spec_and_status_field_of_every_crd_has_a_row() -> None:
    reference = runpy.run_path(str(REPO / "scripts" / "crd_reference.py"))["reference"]()
    for field in (
        "`spec.forecast.history.retentionSeconds`",
        "`status.conditions[].observedGeneration`",
        "`spec.template.nodeSelector`",
        "`status.poolBytesFree`",
    ):
        assert field in reference, field
