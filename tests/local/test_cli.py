"""``warmserve local`` through its command line: bad options in one line, a short replay end to end."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from warmserve.cli import main
from warmserve.local.cli import _replay_slice
from warmserve.local.policies import DEFAULT_POLICY
from warmserve.local.traces import load_rates

from .process_checks import assert_all_gone, children_of, stop


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--day", "-1"], "argument --day: expected an integer >= 0"),
        (["--duration", "0"], "argument --duration: expected a number > 0"),
        (["--rps", "-3"], "argument --rps: expected a number > 0"),
        (["--baseline", "nope"], "--baseline: expected one of ["),
        (["--policy", "muxserve"], "--policy: expected one of ["),
        (["--workers", "0"], "argument --workers: expected an integer >= 1"),
        (["--speed", "-1"], "argument --speed: expected a number >= 0"),
        (["--slo-ms", "0"], "argument --slo-ms: expected a number > 0"),
        (["--serve", "--gpus", "0"], "argument --gpus: expected an integer >= 1"),
        (["--trace", "/nonexistent.csv"], "trace: expected an existing file or folder"),
        (["--day", "30"], "trace: expected some requests in"),
        (["--serve", "--port", "0"], "--port: expected 1 to 65535"),
        (["--engine", "tpu"], "--engine: expected one of ['fake', 'torch', 'vllm']"),
        (["--engine", "torch", "--speed", "2"], "--speed: expected no value with --engine torch"),
        (["--vllm-python", "/usr/bin/python3"], "--vllm-python: expected only with --engine vllm"),
        (["--engine", "vllm", "--vllm-python", "/nonexistent/python"], "--vllm-python: expected the python"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["local", "--no-progress", *argv])
    except SystemExit as exc:  # the option parser refused a value
        code = int(exc.code or 0)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("warmserve") and message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_short_replay_prints_both_policies_and_the_counts_add_up(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    argv = [sys.executable, "-m", "warmserve.cli", "local", "--hours", "2", "--duration", "4"]
    argv += ["--rps", "10", "--speed", "0", "--max-tokens", "4", "--no-progress", "--json", str(out)]
    argv += ["--log-dir", str(tmp_path / "logs")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert DEFAULT_POLICY in done.stdout and "autoscale" in done.stdout and "TTFT p50" in done.stdout
    summaries = json.loads(out.read_text())
    assert [s["policy"] for s in summaries] == [DEFAULT_POLICY, "autoscale"]
    assert summaries[0]["requests"] == summaries[1]["requests"] > 10  # the same arrivals for both
    for s in summaries:
        assert s["completed"] + s["dropped"] == s["requests"]
        assert s["completed"] >= 0.9 * s["requests"]
        assert s["overload_warning"] is None and s["offered_peak_rps"] < s["capacity_rps"]
    assert "warning" not in done.stderr


@pytest.mark.slow
def test_ctrl_c_during_a_replay_stops_every_process(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "warmserve.cli", "local", "--duration", "60", "--speed", "0"]
    argv += ["--no-progress", "--log-dir", str(tmp_path)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(children) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            children = children_of(proc.pid)
        assert len(children) == 3  # two workers and the gateway are up: the replay is starting
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "interrupted" in err
        assert_all_gone(children)
    finally:
        stop(proc, children)


def test_days_count_from_the_first_day_of_a_trace_with_date_timestamps(tmp_path: Path) -> None:
    """A per-request trace with date timestamps starts on its own first day, not in 1970."""
    trace = tmp_path / "dated.csv"
    rows = [f"2023-11-16 18:{m:02d}:00,100,10" for m in range(30)]
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    args = argparse.Namespace(day=0, hours=24.0, duration=60.0, rps=5.0, seed=0)
    replay = _replay_slice(args, load_rates(trace))
    midnight = 1_700_092_800.0  # 2023-11-16 00:00 UTC
    assert replay.start_sec == midnight
