"""``warmserve local`` through its command line: bad options in one line, a short replay end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from warmserve.operator.cli import main
from warmserve.operator.local.policies import DEFAULT_POLICY


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--day", "0"], "--day: expected an integer >= 1"),
        (["--duration", "0"], "--duration: expected a finite number > 0"),
        (["--rps", "-3"], "--rps: expected a finite number > 0"),
        (["--baseline", "nope"], "--baseline: expected one of ["),
        (["--policy", "muxserve"], "--policy: expected one of ["),
        (["--workers", "0"], "--workers: expected an integer >= 1"),
        (["--trace", "/nonexistent.csv"], "trace: expected an existing file or folder"),
        (["--day", "30"], "trace: expected some requests in"),
        (["--serve", "--port", "0"], "--port: expected 1 to 65535"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["local", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("warmserve: error: ") and message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_short_replay_prints_both_policies_and_the_counts_add_up(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    argv = [sys.executable, "-m", "warmserve.operator.cli", "local", "--hours", "2", "--duration", "4"]
    argv += ["--rps", "10", "--speed", "0", "--max-tokens", "4", "--no-progress", "--json", str(out)]
    argv += ["--log-dir", str(tmp_path / "logs")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert DEFAULT_POLICY in done.stdout and "autoscale" in done.stdout and "TTFT p50" in done.stdout
    summaries = json.loads(out.read_text())
    assert [s["policy"] for s in summaries] == [DEFAULT_POLICY, "autoscale"]
    assert summaries[0]["requests"] == summaries[1]["requests"] > 10  # the same arrivals for both
    for s in summaries:
        assert s["completed"] + s["errors"] == s["requests"]
        assert s["completed"] >= 0.9 * s["requests"]
