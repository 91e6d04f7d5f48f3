"""The simulated workload built from per-request traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from warmserve.protocol.errors import InvalidFieldError
from warmserve.sim.workload import WorkloadSpec, build_workload


def _write(path: Path, rows: list[tuple[float, str, int, int]], with_model: bool) -> Path:
    lines = ["timestamp," + ("model," if with_model else "") + "input_tokens,output_tokens"]
    for t, model, prompt, output in rows:
        lines.append(f"{t},{model},{prompt},{output}" if with_model else f"{t},{prompt},{output}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_token_lengths_stay_with_their_requests_when_models_interleave(tmp_path: Path) -> None:
    """The same arrivals read with and without a model column give the same requests: a model's rows are
    read together, so sorting the arrivals alone would give each request another's token counts."""
    rng = np.random.default_rng(3)
    times = np.sort(rng.uniform(0, 300, size=60))
    rows = [(float(t), f"m{i % 3}", 10 + i, 1 + 2 * i) for i, t in enumerate(times)]
    plain = build_workload(WorkloadSpec(_write(tmp_path / "plain.csv", rows, False), models=1, day=0))
    named = build_workload(WorkloadSpec(_write(tmp_path / "named.csv", rows, True), day=0))
    np.testing.assert_array_equal(plain.arrival, named.arrival)
    np.testing.assert_array_equal(plain.prompt, named.prompt)
    np.testing.assert_array_equal(plain.output, named.output)
    # each request keeps its own pair (output = 2 * (prompt - 10) + 1) and its model (m{i % 3})
    np.testing.assert_array_equal(named.output, 2 * (named.prompt - 10) + 1)
    assert [named.models[m] for m in named.model] == [f"m{(p - 10) % 3}" for p in named.prompt]


def _azure_like(path: Path, seconds: int, per_second: int) -> Path:
    rows = [
        (1_700_000_000.0 + t + i / per_second, "m", 100, 10)
        for t in range(seconds)
        for i in range(per_second)
    ]
    return _write(path, rows, with_model=False)


def test_a_request_trace_honours_day_and_the_rate_multiplier_and_refuses_rate(tmp_path: Path) -> None:
    """Every option acts on every trace kind or is refused: a sweep over a per-request trace used to report
    64 x the default rate because --rate, --rate-multiplier and --day were ignored there."""
    trace = _azure_like(tmp_path / "t.csv", seconds=120, per_second=2)
    base = build_workload(WorkloadSpec(trace, models=1, duration_s=60.0))
    assert base.requests == 120 and base.mean_rate_rps == pytest.approx(2.0)
    faster = build_workload(WorkloadSpec(trace, models=1, duration_s=60.0, rate_multiplier=2.0))
    assert faster.requests == 240 and faster.mean_rate_rps == pytest.approx(4.0)
    with pytest.raises(InvalidFieldError, match="rate"):
        build_workload(WorkloadSpec(trace, models=1, mean_rate_rps=8.0))
    with pytest.raises(InvalidFieldError, match="offset"):
        build_workload(WorkloadSpec(trace, models=1, day=1))  # days count from the first request


def test_a_trace_shorter_than_the_duration_is_replayed_for_its_own_length(tmp_path: Path) -> None:
    """A one-hour log under the default day-long --duration: the replay's span, and so the rate it
    reports (and the baselines' sizing, and the progress bar), are the log's hour, not 24 h."""
    trace = _azure_like(tmp_path / "t.csv", seconds=3600, per_second=2)
    day = build_workload(WorkloadSpec(trace, models=1))
    assert day.requests == 7200
    assert day.duration_s == pytest.approx(3600.0, abs=1.0)
    assert day.mean_rate_rps == pytest.approx(2.0, rel=1e-3)
    half = build_workload(WorkloadSpec(trace, models=1, duration_s=1800.0))
    assert half.duration_s == 1800.0 and half.mean_rate_rps == pytest.approx(2.0)
