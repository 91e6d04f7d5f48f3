"""docs/install.md's values table is the one ``scripts/values_table.py`` generates from the chart's schema."""

from __future__ import annotations

import runpy

from tests.chart.helm import REPO


def test_the_values_table_in_the_install_guide_is_current() -> None:
    page = (REPO / "docs" / "install.md").read_text()
    shown = page.split("<!-- values-table:start -->\n", 1)[1].split("<!-- values-table:end -->", 1)[0]
    generated = runpy.run_path(str(REPO / "scripts" / "values_table.py"))["table"]()
    assert shown == generated, "run python3 scripts/values_table.py and paste its table into docs/install.md"
