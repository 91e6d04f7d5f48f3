"""`warmserve forecast` end to end on small files, through the real `warmserve` entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from warmserve.cli import main

METRICS = {
    "mean_mape",
    "peak_mape",
    "mean_mase",
    "peak_mase",
    "peak_exceeded",
    "peak_loss",
    "bound_exceeded",
    "peak_factor",
}


def write_requests(path: Path) -> None:
    """Three days of per-request CSV for two models, busier in the second half of each hour."""
    rng = np.random.default_rng(0)
    rows = ["time,llm,prompt_tokens,completion_tokens"]
    for hour in range(72):
        for model, base in (("a", 6), ("b", 2)):
            count = base * (2 if hour % 24 >= 12 else 1)
            for arrival in np.sort(rng.uniform(hour * 3600, (hour + 1) * 3600, count)):
                rows.append(f"{arrival:.3f},{model},{rng.integers(10, 500)},{rng.integers(5, 100)}")
    path.write_text("\n".join(rows) + "\n")


def test_forecast_backtests_a_request_csv_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "requests.csv"
    write_requests(trace)
    out = tmp_path / "out.json"
    argv = [
        "forecast",
        "--trace",
        str(trace),
        "--model-column",
        "llm",
        "--window",
        "3600",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "a: 36 training windows of 3600 s" in printed and "overall (mean over 2 models)" in printed
    result = json.loads(out.read_text())
    assert result["window_sec"] == 3600
    assert set(result["forecasters"]) == {
        "warmserve",
        "ets",
        "stl-arima",
        "seasonal-naive-1d",
        "seasonal-naive-7d",
        "last-value",
        "auto",
    }
    assert set(result["models"]) == {"a", "b"}
    for scores in [
        *result["forecasters"].values(),
        *(s for m in result["models"].values() for s in m.values()),
    ]:
        assert set(scores) == METRICS
        assert all(value is None or value >= 0 for value in scores.values())
    # The daily pattern is forecastable: the seasonal forecaster beats last value on the window mean.
    overall = result["forecasters"]
    assert overall["seasonal-naive-1d"]["mean_mase"] < overall["last-value"]["mean_mase"]


def test_forecast_runs_on_the_shipped_sample_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["forecast", "--forecasters", "last-value,warmserve"]) == 0
    printed = capsys.readouterr().out
    for model in ("m-large", "m-mid", "m-small"):
        assert f"{model}: 1008 training windows of 600 s" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--window", "450"], "window: expected a whole multiple of the trace's 600 s resolution"),
        (["--forecasters", "prophet"], "argument --forecasters: expected names among warmserve, ets"),
        (
            ["--train-fraction", "1"],
            "argument --train-fraction: expected a number > 0 and < 1, got '1'",
        ),
        (["--train-fraction", "half"], "argument --train-fraction: expected a number > 0 and < 1"),
        (["--trace", "/nonexistent/trace.csv"], "trace: expected an existing file or folder"),
        (["--json", "/nonexistent/out.json"], "argument --json: cannot write /nonexistent/out.json: folder"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["forecast", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("warmserve") and "error: " in err and message in err and "\n" not in err


def exit_code(argv: list[str]) -> int:
    """The exit code of the command, whether a subcommand returned it or the option parser exited."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_a_sparse_model_is_reported_not_fatal_and_every_model_gets_a_next_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real log holds models with a handful of requests: they are left out of the backtest with the
    reason, the others are scored, and every model still gets a next-window forecast saying how."""
    trace = tmp_path / "requests.csv"
    write_requests(trace)
    with trace.open("a") as out:
        out.write("100000.0,rare,10,10\n")
    out_json = tmp_path / "out.json"
    argv = ["forecast", "--trace", str(trace), "--model-column", "llm", "--window", "3600"]
    assert main([*argv, "--forecasters", "last-value,seasonal-naive-7d", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert (
        "not backtested:\n  rare: " in printed
        and "too few for a training, a validation and a test part" in printed
    )
    assert "overall (mean over 2 models)" in printed
    # 24 windows of an hour before the validation span are far from the week seasonal-naive-7d needs.
    assert "seasonal-naive-7d fell back: needs 168 windows of history, had 24" in printed
    result = json.loads(out_json.read_text())
    assert set(result["skipped"]) == {"rare"}
    assert set(result["fallbacks"]["a"]) == {"seasonal-naive-7d"}
    ahead = result["next_window"]
    assert set(ahead) == {"a", "b", "rare"}
    # The one-window model borrows the daily shape of the two others, at its own level.
    assert ahead["rare"]["forecaster"] == "pooled-shape" and "too few" in ahead["rare"]["why"]
    assert ahead["a"]["forecaster"] in {"last-value", "seasonal-naive-7d"}
    assert ahead["a"]["start_sec"] == 72 * 3600
    assert 0 <= ahead["a"]["mean"] <= ahead["a"]["peak"]


def test_a_trace_where_no_model_can_be_backtested_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "rates.csv"
    trace.write_text("t_sec,rate_rps\n0,1\n600,2\n")
    assert main(["forecast", "--trace", str(trace), "--forecasters", "last-value"]) == 2
    err = capsys.readouterr().err
    assert (
        "trace: expected at least one model with windows for a training, a validation and a test part" in err
    )


def test_a_malformed_trace_names_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "rates.csv"
    trace.write_text("t_sec,model,rate_rps,cv\n0,m,1,1\n600,m,1,1\n1200,m,lots,1\n")
    assert main(["forecast", "--trace", str(trace)]) == 2
    assert f"{trace}:4: column rate_rps: expected a finite number ≥ 0, got 'lots'" in capsys.readouterr().err


def test_an_unwritable_json_is_refused_before_the_trace_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The trace does not exist either: the output path is what the parser refuses first."""
    argv = ["forecast", "--trace", str(tmp_path / "missing.csv"), "--json", str(tmp_path / "no/x.json")]
    assert exit_code(argv) == 2
    assert "argument --json: cannot write" in capsys.readouterr().err
