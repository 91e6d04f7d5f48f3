"""Trace readers: every format on small files written here, malformed input, and the real shared traces."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from warmserve.operator.forecast.traces import (
    RateSeries,
    ReaderOptions,
    RequestSeries,
    TraceFormatError,
    aggregate_cv,
    detect_format,
    read_rate_csv,
    read_trace,
    write_rate_csv,
)
from warmserve.protocol.errors import InvalidFieldError

SHARED_TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"


def write_servegen(folder: Path, model: str, client: int, rows: list[tuple[float, float, float]]) -> None:
    target = folder / model
    target.mkdir(parents=True, exist_ok=True)
    lines = [f"{t:g},{rate},{cv},{'Gamma' if rate else ''},1,1" for t, rate, cv in rows]
    (target / f"chunk-{client}-trace.csv").write_text("\n".join(lines) + "\n")


def test_servegen_sums_clients_and_combines_their_burstiness(tmp_path: Path) -> None:
    write_servegen(tmp_path, "m-a", 0, [(0, 2.0, 1.0), (600, 1.0, 2.0), (1200, 0.0, 0.0)])
    write_servegen(tmp_path, "m-a", 1, [(0, 2.0, 3.0), (600, 0.0, 0.0), (1200, 0.0, 0.0)])
    write_servegen(tmp_path, "m-b", 0, [(0, 5.0, 1.0), (600, 5.0, 1.0)])
    a, b = read_trace(tmp_path)
    assert isinstance(a, RateSeries) and isinstance(b, RateSeries)
    assert (a.model, a.start_sec, a.window_sec) == ("m-a", 0.0, 600.0)
    # Window 0: rates add to 4, cv² = (2·1 + 2·9) / 4 = 5; window 2 has every client idle, so it is a gap.
    assert a.rate_rps[:2].tolist() == [4.0, 1.0] and math.isnan(a.rate_rps[2])
    assert a.cv[0] == pytest.approx(math.sqrt(5.0)) and a.cv[1] == pytest.approx(2.0)
    assert b.model == "m-b" and b.rate_rps.tolist() == [5.0, 5.0]


def test_servegen_per_client_keeps_idle_windows_as_zero(tmp_path: Path) -> None:
    write_servegen(tmp_path, "m", 3, [(0, 2.0, 1.0), (600, 0.0, 0.0)])
    write_servegen(tmp_path, "m", 7, [(0, 1.0, 1.0), (600, 4.0, 1.0)])
    series = read_trace(tmp_path, ReaderOptions(per_client=True))
    assert [s.model for s in series] == ["m:client-3", "m:client-7"]
    assert isinstance(series[0], RateSeries) and series[0].rate_rps.tolist() == [2.0, 0.0]


def test_servegen_missing_window_is_a_gap_not_zero(tmp_path: Path) -> None:
    write_servegen(tmp_path, "m", 0, [(0, 1.0, 1.0), (1200, 3.0, 1.0), (1800, 1.0, 1.0)])
    write_servegen(tmp_path, "m", 1, [(0, 1.0, 1.0), (1200, 3.0, 1.0), (1800, 1.0, 1.0)])
    (series,) = read_trace(tmp_path)
    assert isinstance(series, RateSeries)
    assert series.rate_rps[0] == 2.0 and math.isnan(series.rate_rps[1]) and series.rate_rps[2] == 6.0


def test_aggregate_cv_of_one_client_is_its_own_and_of_idle_is_zero() -> None:
    rates = np.array([[3.0, 0.0]])
    assert aggregate_cv(rates, np.array([[1.7, 0.0]])).tolist() == [pytest.approx(1.7), 0.0]


def test_rate_csv_round_trips_and_defaults_cv_to_poisson(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("t_sec,rate_rps\n0,1.5\n300,2.5\n900,4\n")
    (series,) = read_trace(plain)
    assert isinstance(series, RateSeries)
    assert series.model == "plain" and series.window_sec == 300.0
    assert np.array_equal(series.rate_rps, [1.5, 2.5, np.nan, 4.0], equal_nan=True)
    assert series.cv.tolist()[:2] == [1.0, 1.0]
    copy = tmp_path / "copy.csv"
    write_rate_csv([series], copy)
    (again,) = read_rate_csv(copy)
    assert np.array_equal(again.rate_rps, series.rate_rps, equal_nan=True) and again.start_sec == 0.0


def test_request_csv_with_dates_and_no_model_column_is_one_model(tmp_path: Path) -> None:
    path = tmp_path / "azure.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:04.0319600,3180,8\n"
        "2023-11-16 18:17:03.9799600,4808,10\n"
    )
    assert detect_format(path) == "csv"
    (series,) = read_trace(path)
    assert isinstance(series, RequestSeries) and series.model == "azure"
    assert series.arrival_sec[1] - series.arrival_sec[0] == pytest.approx(0.052)  # sorted by arrival
    assert series.input_tokens.tolist() == [4808.0, 3180.0] and np.isnan(series.duration_sec).all()


def test_request_csv_with_configured_columns_and_models(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("at,llm,in,out,took\n1.5,a,10,2,0.5\n0.5,b,20,4,1\n2,a,1,1,3\n")
    options = ReaderOptions(
        timestamp_column="at",
        model_column="llm",
        input_column="in",
        output_column="out",
        duration_column="took",
    )
    a, b = read_trace(path, options)
    assert isinstance(a, RequestSeries) and isinstance(b, RequestSeries)
    assert (a.model, a.arrival_sec.tolist(), a.duration_sec.tolist()) == ("a", [1.5, 2.0], [0.5, 3.0])
    assert (b.model, b.input_tokens.tolist()) == ("b", [20.0])


def test_jsonl_timestamps_default_to_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "mooncake.jsonl"
    rows = [{"timestamp": 0, "input_length": 5, "output_length": 2}, {"timestamp": 1500, "input_length": 3}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (series,) = read_trace(path)
    assert isinstance(series, RequestSeries)
    assert series.arrival_sec.tolist() == [0.0, 1.5]
    assert series.output_tokens[0] == 2.0 and math.isnan(series.output_tokens[1])
    (seconds,) = read_trace(path, ReaderOptions(timestamp_unit="s"))
    assert isinstance(seconds, RequestSeries) and seconds.arrival_sec.tolist() == [0.0, 1500.0]


@pytest.mark.parametrize(
    ("name", "text", "line", "column"),
    [
        ("bad.csv", "t_sec,model,rate_rps,cv\n0,m,1,1\n600,m,fast,1\n", 3, "rate_rps"),
        ("neg.csv", "t_sec,model,rate_rps,cv\n0,m,1,1\n600,m,-2,1\n", 3, "rate_rps"),
        ("req.csv", "timestamp,input_tokens\n1,5\n2,five\n", 3, "input_tokens"),
        ("ragged.csv", "timestamp,input_tokens\n1,5\n2,5,9\n", 3, "3"),
        ("date.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03,5\nyesterday,5\n", 3, "TIMESTAMP"),
        ("dup.csv", "t_sec,model,rate_rps\n0,m,1\n0,m,2\n", 3, "t_sec"),
    ],
)
def test_malformed_csv_names_file_line_and_column(
    tmp_path: Path, name: str, text: str, line: int, column: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TraceFormatError) as caught:
        read_trace(path)
    assert (caught.value.path, caught.value.line, caught.value.column) == (path, line, column)
    assert str(path) in str(caught.value) and f":{line}:" in str(caught.value)


def test_malformed_jsonl_and_servegen_name_file_line_and_column(tmp_path: Path) -> None:
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"timestamp": 1}\n\n{"timestamp": 2,, }\n')
    with pytest.raises(TraceFormatError, match=r"t\.jsonl:3: column 17"):
        read_trace(jsonl)
    jsonl.write_text('{"timestamp": 1}\n{"timestamp": "x"}\n')
    with pytest.raises(TraceFormatError, match=r"t\.jsonl:2: column timestamp"):
        read_trace(jsonl)
    write_servegen(tmp_path / "sg", "m", 0, [(0, 1.0, 1.0), (600, 1.0, 1.0)])
    bad = tmp_path / "sg" / "m" / "chunk-0-trace.csv"
    bad.write_text("0,1,1,Gamma,1,1\n600,1,oops,Gamma,1,1\n")
    with pytest.raises(TraceFormatError, match=r"chunk-0-trace\.csv:2: column 3 \(cv\)"):
        read_trace(tmp_path / "sg")


def test_unusable_traces_raise_invalid_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidFieldError, match="existing file"):
        read_trace(tmp_path / "missing.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidFieldError, match=r"chunk-<N>-trace\.csv"):
        read_trace(tmp_path / "empty")
    no_time = tmp_path / "no_time.csv"
    no_time.write_text("when,input_tokens\n1,2\n")
    with pytest.raises(InvalidFieldError, match="timestamp_column"):
        read_trace(no_time)
    with pytest.raises(InvalidFieldError, match="model_column"):
        read_trace(no_time, ReaderOptions(timestamp_column="when", model_column="llm"))


@pytest.mark.skipif(not SHARED_TRACES.is_dir(), reason=f"shared traces not found at {SHARED_TRACES}")
def test_reads_the_real_shared_traces() -> None:
    (small,) = read_trace(SHARED_TRACES / "servegen" / "data" / "language" / "m-small")
    assert isinstance(small, RateSeries) and small.model == "m-small"
    assert len(small.rate_rps) == 2016 and small.window_sec == 600  # 14 days of 10-minute windows
    assert np.isnan(small.rate_rps).sum() == 37  # the windows in which all 43 clients are idle
    (azure,) = read_trace(SHARED_TRACES / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv")
    assert isinstance(azure, RequestSeries) and len(azure.arrival_sec) == 19_366
    assert 3_400 < azure.arrival_sec[-1] - azure.arrival_sec[0] < 3_600  # about 58 minutes
    (kimi,) = read_trace(SHARED_TRACES / "mooncake_fast25" / "conversation_trace.jsonl")
    assert isinstance(kimi, RequestSeries) and len(kimi.arrival_sec) == 12_031
    assert 3_500 < kimi.arrival_sec[-1] < 3_600  # 58.9 minutes of milliseconds


def test_shipped_sample_matches_its_readme() -> None:
    sample = (
        Path(__file__).resolve().parents[2] / "operator/warmserve/operator/data/servegen_language_600s.csv"
    )
    assert sample.stat().st_size < 1_000_000
    series = read_rate_csv(sample)
    assert [s.model for s in series] == ["m-large", "m-mid", "m-small"]
    assert all(len(s.rate_rps) == 2016 and s.window_sec == 600 for s in series)
