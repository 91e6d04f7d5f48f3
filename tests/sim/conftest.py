"""A small rate trace for simulator tests: two days of three models at 10-minute windows with a
daily shape (a busy hour), written in WarmServe's rate CSV format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rate_trace(tmp_path: Path) -> Path:
    windows = np.arange(2 * 144)
    hour = (windows % 144) // 6
    lines = ["t_sec,model,rate_rps,cv"]
    for k, name in enumerate(("alpha", "beta", "gamma")):
        rate = 1.0 + 4.0 * (hour == 1 + k) + 0.5 * np.sin(windows / 7.0 + k)
        lines += [f"{w * 600},{name},{r:.4f},1.5" for w, r in zip(windows, rate, strict=True)]
    path = tmp_path / "rates.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
