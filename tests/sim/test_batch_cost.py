"""The aggregated costs equal the timing model's own, iteration by iteration (the simulator must time
batches exactly as the fake engine does)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmserve.sim.batch_cost import Costing
from warmserve.worker.timing import GPU_PROFILES, MODEL_SHAPES, Iteration, iteration_seconds

shapes = st.sampled_from(sorted(MODEL_SHAPES))
gpus = st.sampled_from(sorted(GPU_PROFILES))


@given(
    shapes,
    gpus,
    st.sampled_from([1, 2, 4]),
    st.lists(st.integers(1, 4000), max_size=4),
    st.lists(st.integers(1, 8000), max_size=16),
)
def test_one_iteration_matches_the_timing_model(
    shape: str, gpu: str, tp: int, prompts: list[int], contexts: list[int]
) -> None:
    cost = Costing(MODEL_SHAPES[shape], GPU_PROFILES[gpu], tp)
    expected = iteration_seconds(cost.shape, cost.gpu, tp, Iteration(tuple(prompts), tuple(contexts)))
    attended = sum(p * (p + 1) // 2 for p in prompts)
    got = cost.iteration(sum(prompts), attended, len(contexts), sum(contexts))
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


@given(
    shapes,
    gpus,
    st.sampled_from([1, 2, 4]),
    st.lists(st.integers(1, 30000), min_size=1, max_size=32),
    st.integers(0, 300),
)
def test_a_decode_run_is_the_sum_of_its_iterations(
    shape: str, gpu: str, tp: int, contexts: list[int], k: int
) -> None:
    cost = Costing(MODEL_SHAPES[shape], GPU_PROFILES[gpu], tp)
    expected = sum(
        iteration_seconds(cost.shape, cost.gpu, tp, Iteration((), tuple(c + j for c in contexts)))
        for j in range(k)
    )
    assert cost.decode_run(len(contexts), sum(contexts), k) == pytest.approx(expected, rel=1e-9)
    elapsed = cost.decode_run(len(contexts), sum(contexts), k // 2) + 1e-12
    assert cost.iterations_within(len(contexts), sum(contexts), k, elapsed) == k // 2


def test_a_slowdown_stretches_every_iteration() -> None:
    base = Costing(MODEL_SHAPES["llama2-7b"], GPU_PROFILES["h100"], 1)
    shared = Costing(base.shape, base.gpu, 1, slowdown=2.5)
    assert shared.decode_run(4, 4000, 10) == pytest.approx(2.5 * base.decode_run(4, 4000, 10))
