"""``promtool check metrics`` on an exposition, for every component's /metrics test (not a test module)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

#: Skips a test when promtool is not installed.
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed"
)


def assert_promtool_passes(text: str | bytes) -> None:
    """Fails with promtool's complaints unless it finds ``text`` a clean exposition."""
    data = text.encode() if isinstance(text, str) else text
    checked = subprocess.run(["promtool", "check", "metrics"], input=data, capture_output=True, check=False)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode(errors="replace")
