"""Capacity planning on a log's own models: the workload keeps them, the sizes file and the guesses by
name size them, options that make no sense for the trace are refused, and the GPU sweep finds each policy's
fewest GPUs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from warmserve.cli import main
from warmserve.protocol.errors import InvalidFieldError
from warmserve.sim.catalog import ClusterSpec
from warmserve.sim.scenario import Scenario, gpus_at_slo, prepare
from warmserve.sim.sizes import DEFAULT_GUESS, guess_size, read_sizes
from warmserve.sim.workload import WorkloadSpec, build_workload
from warmserve.worker.timing import GPU_PROFILES, MODEL_SHAPES

H100 = GPU_PROFILES["h100"]
#: model -> requests per second; the names carry distinct sizes (one without any)
RATES = {"alpha-7b": 0.5, "beta-13b": 0.2, "gamma": 0.1, "delta-8b": 0.05}


def _log(path: Path, seconds: float, seed: int = 1) -> tuple[Path, dict[str, int]]:
    """A per-request log of :data:`RATES` written model after model (so its rows are not in arrival
    order); each request's output tokens are its model's index modulo 4, to tell them apart."""
    rng = np.random.default_rng(seed)
    rows, counts = ["timestamp,model,input_tokens,output_tokens"], {}
    for index, (name, rate) in enumerate(RATES.items()):
        times = np.cumsum(rng.exponential(1 / rate, size=int(rate * seconds * 2)))
        times = times[times < seconds]
        counts[name] = len(times)
        for t in times:
            rows.append(f"{t:.3f},{name},{rng.integers(50, 500)},{4 * rng.integers(2, 50) + index}")
    path.write_text("\n".join(rows) + "\n")
    return path, counts


def test_a_log_with_a_model_column_keeps_its_models_arrivals_and_token_counts(tmp_path: Path) -> None:
    trace, counts = _log(tmp_path / "log.csv", 1800.0)
    workload = build_workload(WorkloadSpec(trace))
    assert workload.kind == "models"
    assert workload.models == tuple(sorted(RATES))
    assert dict(zip(workload.models, np.bincount(workload.model).tolist(), strict=True)) == counts
    assert np.all(np.diff(workload.arrival) >= 0)
    index = np.array([list(RATES).index(workload.models[m]) for m in workload.model])
    np.testing.assert_array_equal(workload.output % 4, index)


def test_options_that_make_no_sense_for_the_trace_are_refused_naming_them(
    tmp_path: Path, rate_trace: Path
) -> None:
    trace, _ = _log(tmp_path / "log.csv", 60.0)
    for spec, option in (
        (WorkloadSpec(trace, models=2), "models"),
        (WorkloadSpec(trace, alpha=0.5), "alpha"),
        (WorkloadSpec(trace, mean_rate_rps=3.0), "rate"),
        (WorkloadSpec(trace, max_cv=2.0), "max-cv"),
    ):
        with pytest.raises(
            InvalidFieldError, match=f"^{option}: expected no --{option} with a per-request log"
        ):
            build_workload(spec)
    with pytest.raises(InvalidFieldError, match=r"^shapes: expected no --shapes"):
        prepare(Scenario(WorkloadSpec(trace), shapes=("llama2-7b",)))
    sizes = tmp_path / "sizes.csv"
    sizes.write_text("model,weight,tp\nalpha,13Gi,1\n")
    with pytest.raises(InvalidFieldError, match=r"^model-sizes: expected no --model-sizes with a rate trace"):
        prepare(Scenario(WorkloadSpec(rate_trace, models=3, day=1), sizes=sizes))


def test_the_sizes_file_reads_yaml_and_csv_alike(tmp_path: Path) -> None:
    yaml_file = tmp_path / "sizes.yaml"
    yaml_file.write_text(
        "alpha-7b: {weight: 13Gi, tp: 1}\nbeta-13b:\n  weight: 2.6e10\n  tp: 2\n  kv_bytes_per_token: 800Ki\n"
    )
    csv_file = tmp_path / "sizes.csv"
    csv_file.write_text("model,weight,tp,kv_bytes_per_token\nalpha-7b,13Gi,1,\nbeta-13b,2.6e10,2,800Ki\n")
    for path in (yaml_file, csv_file):
        sizes = read_sizes(path)
        assert sizes["alpha-7b"].weight_bytes == 13 * 2**30 and sizes["alpha-7b"].tensor_parallel == 1
        assert sizes["beta-13b"].weight_bytes == 26_000_000_000 and sizes["beta-13b"].tensor_parallel == 2
        assert sizes["beta-13b"].kv_bytes_per_token == 800 * 1024
        assert sizes["alpha-7b"].kv_bytes_per_token == MODEL_SHAPES["llama2-7b"].kv_bytes_per_token
        assert not sizes["alpha-7b"].guess


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("s.csv", "model,weight,tp\na,13Gi,1\nb,13 GB,1\n",
         r"s\.csv:3: weight: expected a positive whole quantity"),
        ("s.csv", "model,weight,tp\na,13Gi,3\n", r"s\.csv:2: tp: expected one of 1, 2, 4"),
        ("s.csv", "model,weight,tp\na,13Gi\n", r"s\.csv:2: fields: expected 3 fields"),
        ("s.csv", "model,weight,tp,colour\na,13Gi,1,red\n", r"s\.csv:2: colour: expected a field among"),
        ("s.yaml", "a: {weight: 13Gi, tp: 1}\nb: {tp: 1}\n", r"s\.yaml:2: weight: expected a value"),
        ("s.yaml", "a: {weight: 13Gi, tp: 1}\n\nb: {weight: 1Gi, tp: 1, kv_bytes_per_token: 6}\n",
         r"s\.yaml:3: kv_bytes_per_token: expected a multiple of 4"),
        ("s.yaml", "a: {weight: 13Gi, tp: 1}\na: {weight: 13Gi, tp: 2}\n",
         r"s\.yaml:2: model: expected each model once"),
    ],
)  # fmt: skip
def test_a_bad_line_of_the_sizes_file_is_refused_naming_file_line_and_field(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidFieldError, match=message) as error:
        read_sizes(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_sizes_are_guessed_from_the_name_and_say_so() -> None:
    seven = guess_size("team-Llama-7B-chat", H100, 8)
    assert seven.shape == "llama2-7b" and seven.tensor_parallel == 1 and "7B in the name" in seven.guess
    seventy = guess_size("llama-70b", H100, 8)
    assert seventy.shape == "llama2-70b" and seventy.tensor_parallel == 4  # 138 GB: 4 shards fit half a GPU
    assert guess_size("llama-70b", H100, 2).tensor_parallel == 2  # no wider than a node
    small = guess_size("qwen2.5-0.5b", H100, 8)
    assert small.shape is None and small.weight_bytes == 1_000_000_000 and small.tensor_parallel == 1
    moe = guess_size("mixtral-8x7b", H100, 8)
    assert moe.weight_bytes == 2 * 56_000_000_000 and moe.tensor_parallel == 4
    unknown = guess_size("gamma", H100, 8)
    assert unknown.shape == DEFAULT_GUESS and "no size in the name" in unknown.guess


def test_the_gpu_sweep_finds_the_fewest_gpus_each_policy_needs(tmp_path: Path) -> None:
    """The four models' weights (7B + 13B + 8B + 8B) fit one H100 together, so the static colocation
    (muxserve) holds the SLO on one GPU; WarmServe, whose forecast has no history before the replay (it
    repeats the last window of it) and one model per GPU, misses it on one GPU and holds it with one per
    model, where one static replica per model (dedicated) still misses it."""
    trace, _ = _log(tmp_path / "log.csv", 900.0)
    scenario = Scenario(WorkloadSpec(trace), ClusterSpec(nodes=1, gpus_per_node=1))
    workload, models = prepare(scenario)
    assert {m: c.spec.tensor_parallel for m, c in models.items()} == dict.fromkeys(RATES, 1)
    fewest = {}
    for policy in ("warmserve", "muxserve", "dedicated"):
        fewest[policy], attained = gpus_at_slo(scenario, workload, models, policy, [1, 4])
        assert fewest[policy] == next((n for n in (1, 4) if attained[n] >= 0.99), None)
    assert fewest == {"warmserve": 4, "muxserve": 1, "dedicated": None}
    two_per_node = replace(scenario, cluster=ClusterSpec(nodes=1, gpus_per_node=2))
    with pytest.raises(InvalidFieldError, match=r"^sweep-gpus: expected whole nodes"):
        gpus_at_slo(two_per_node, workload, models, "muxserve", [2, 3])


def test_simulate_reports_per_model_figures_sizes_and_the_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace, counts = _log(tmp_path / "log.csv", 600.0)
    sizes = tmp_path / "sizes.yaml"
    sizes.write_text("gamma: {weight: 26Gi, tp: 1}\n")
    out = tmp_path / "out.json"
    argv = ["simulate", "--trace", str(trace), "--model-sizes", str(sizes), "--nodes", "1", "--gpus", "2",
            "--policies", "warmserve,muxserve", "--sweep-gpus", "2,4", "--json", str(out),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    document = json.loads(out.read_text())
    assert set(document["per_model"]["warmserve"]) == set(RATES)
    assert {m: f["requests"] for m, f in document["per_model"]["muxserve"].items()} == counts
    kv = MODEL_SHAPES["llama2-13b"].kv_bytes_per_token  # the shape nearest 26 GiB of fp16
    assert document["model_sizes"]["gamma"] == {
        "weight_bytes": 26 * 2**30, "tensor_parallel": 1, "kv_bytes_per_token": kv, "guessed": None,
    }  # fmt: skip
    assert document["model_sizes"]["alpha-7b"]["guessed"].startswith("guessed: 7b in the name")
    sweep = document["sweep_gpus"]
    assert sweep["slo_target"] == 0.99 and set(sweep["policies"]) == {"warmserve", "muxserve"}
    for policy in sweep["policies"].values():
        shares = {int(k): v for k, v in policy["slo_attainment"].items()}
        assert policy["fewest_gpus"] == next((c for c in sorted(shares) if shares[c] >= 0.99), None)
    text = capsys.readouterr().out
    assert "fewest GPUs at >= 99% SLO" in text and "from --model-sizes" in text and "GPU-hours" in text


def test_a_column_option_on_a_rate_trace_is_one_line(
    rate_trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--trace", str(rate_trace), "--model-column", "name", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model-column" in err and "rate trace" in err
