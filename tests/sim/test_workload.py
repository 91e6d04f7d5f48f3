"""The simulated workload built from per-request traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
    named = build_workload(WorkloadSpec(_write(tmp_path / "named.csv", rows, True), models=1, day=0))
    np.testing.assert_array_equal(plain.arrival, named.arrival)
    np.testing.assert_array_equal(plain.prompt, named.prompt)
    np.testing.assert_array_equal(plain.output, named.output)
    # each request keeps its own pair: output = 2 * (prompt - 10) + 1
    np.testing.assert_array_equal(named.output, 2 * (named.prompt - 10) + 1)
