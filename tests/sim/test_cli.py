"""``warmserve simulate`` end to end through the real entry point, on the small rate trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from warmserve.cli import main
from warmserve.sim.results import KEYS


def args(trace: Path, *extra: str) -> list[str]:
    return [
        "simulate", "--trace", str(trace), "--models", "3", "--day", "1", "--offset", "3000",
        "--duration", "600", "--nodes", "1", "--gpus", "4", "--shapes", "llama2-7b", "--no-progress", *extra,
    ]  # fmt: skip


def test_simulate_writes_the_table_json_and_plot(
    rate_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    code = main(args(rate_trace, "--policies", "warmserve,muxserve", "--json", str(out), "--plot", str(png)))
    assert code == 0
    document = json.loads(out.read_text())
    assert set(document["policies"]) == {"warmserve", "muxserve"}
    for figures in document["policies"].values():
        assert set(figures) == {*KEYS, "scheduler_held_ticks", "scheduler_excluded_ticks"}
        assert figures["requests"] == document["requests"] > 0
    assert png.stat().st_size > 10_000
    table = capsys.readouterr().out
    assert "warmserve" in table and "muxserve" in table and "SLO" in table


def test_unknown_policy_is_one_line_naming_the_accepted(
    rate_trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args(rate_trace, "--policies", "warmserve,prism")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "prism" in err and "autoscale" in err


def test_unknown_forecaster_is_refused_before_the_run_naming_the_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The trace is missing too: the name is refused by the option parser, before any work."""
    with pytest.raises(SystemExit) as exited:
        main(args(tmp_path / "missing.csv", "--forecaster", "prophet"))
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1
    assert "argument --forecaster: expected one of warmserve, ets, stl-arima" in err and "prophet" in err


@pytest.mark.parametrize(
    ("option", "path", "message"),
    [
        ("--json", "/nonexistent/dir/out.json", "argument --json: cannot write /nonexistent/dir/out.json"),
        ("--plot", "/nonexistent/dir/out.png", "argument --plot: cannot write /nonexistent/dir/out.png"),
        ("--plot", "out.xyz", "argument --plot: out.xyz: expected a file name ending in one of"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_the_run(
    option: str, path: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The trace is missing too: the output path is refused by the option parser, before any work."""
    with pytest.raises(SystemExit) as exited:
        main(args(tmp_path / "missing.csv", "--policies", "muxserve", option, path))
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-cv", "-1", "argument --max-cv: expected a number > 0, got '-1'"),
        ("--alpha", "-1", "argument --alpha: expected a number >= 0, got '-1'"),
        ("--gpus", "0", "argument --gpus: expected an integer >= 1, got '0'"),
        ("--rate", "nan", "argument --rate: expected a number > 0, got 'nan'"),
        ("--day", "1.5", "argument --day: expected an integer >= 0, got '1.5'"),
    ],
)
def test_a_value_out_of_range_names_the_option_as_typed(
    option: str, value: str, message: str, rate_trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args(rate_trace, option, value))
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err and err.count("\n") == 1


def test_a_replay_without_a_day_of_history_says_which_forecasts_are_not_forecasts(
    rate_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Day 0 has no day before it: warmserve's online forecast only repeats the last window, which the
    table alone would not tell (its figures then match no-forecast's)."""
    out = tmp_path / "out.json"
    argv = args(rate_trace, "--policies", "muxserve", "--json", str(out))
    argv[argv.index("--day") + 1] = "0"
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "model-00: 5 windows of history before the replay" in printed  # --offset 3000: five 600 s windows
    notes = json.loads(out.read_text())["forecast_notes"]
    assert set(notes) == {"model-00", "model-01", "model-02"}
    assert main(args(rate_trace, "--policies", "muxserve", "--json", str(out))) == 0  # day 1: a day before it
    assert json.loads(out.read_text())["forecast_notes"] == {}
