"""The soak benchmark in short (``bench/bench_soak.py --minutes 1``): the local system under an open-loop
load while a worker is killed, one is stopped and resumed, the gateway and the scheduler restart and a
burst of malformed requests arrives; its floors, loosely (a minute is too short for the throughput
windows, and this machine is shared: the benchmark itself prints them all)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_soak.py"


@pytest.mark.slow
def test_a_one_minute_soak_loses_nothing_and_answers_no_bad_input_with_a_5xx(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    argv = [sys.executable, str(BENCH), "--minutes", "1", "--rps", "10", "--fuzz-examples", "40"]
    argv += ["--json", str(out), "--log-dir", str(tmp_path / "logs")]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    fig = json.loads(out.read_text())
    assert fig["lost"] == 0, fig["lost_examples"]
    assert fig["bad_input_5xx"] == 0, fig["bad_input_5xx_examples"]
    assert fig["longest_refusal_s"] <= 5.0
    assert fig["restarts"].get("w0") == 1 and fig["restarts"].get("gateway") == 1  # killed, then back
    done = fig["outcomes"].get("ok", 0)
    assert done >= 0.5 * sum(fig["outcomes"].values()), fig["outcomes"]
    assert fig["shortest_same_pair_gap_s"] >= 10.0
