"""A snapshot is validated whole: each inconsistency raises a typed error naming its field."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.operator.planning_builders import GIB, model, prewarmed, serving, snapshot, workers
from warmserve.operator.planning.kv_reservation import KvConfig
from warmserve.operator.planning.placement import PlacementConfig
from warmserve.operator.planning.reactive import ReactiveConfig
from warmserve.operator.planning.snapshot import (
    Demand,
    Forecast,
    Gpu,
    ModelConfig,
    Replica,
    Snapshot,
    SnapshotError,
    Worker,
)
from warmserve.protocol.errors import InvalidFieldError, WarmServeError
from warmserve.protocol.state import ReplicaState, Role

A = model("a", 4)
B = model("b", 4)


def bad_spec(**fields: object) -> Snapshot:
    return snapshot([replace(A, spec=replace(A.spec, **fields))])  # type: ignore[arg-type]


#: Replica-level inconsistencies: (case, models, replicas, field, expected). Each is checked through the
#: constructor, :meth:`Snapshot.with_replicas` (the path a plan's after-snapshot takes) and
#: :meth:`Snapshot.revise` (the scheduler's next tick).
REPLICA_CASES: list[tuple[str, list[ModelConfig], list[Replica], str, str]] = [
    ("gpu that does not exist", [A], [prewarmed("r", "a", [7])], "replicas[0].gpus[0]", "a GPU of w0"),
    (
        "unknown worker",
        [A],
        [prewarmed("r", "a", [0], worker="nope")],
        "replicas[0].worker",
        "one of the workers",
    ),
    ("unknown model", [A], [prewarmed("r", "zz", [0])], "replicas[0].model", "one of the declared models"),
    ("wrong GPU count", [A], [prewarmed("r", "a", [0, 1])], "replicas[0].gpus", "1 distinct GPUs"),
    (
        "duplicate id",
        [A, B],
        [prewarmed("r", "a", [0]), prewarmed("r", "b", [1])],
        "replicas[1].id",
        "unique",
    ),
    (
        "model twice on a GPU",
        [A],
        [prewarmed("r", "a", [0]), prewarmed("s", "a", [0])],
        "replicas[1].gpus",
        "no GPU already holding 'a'",
    ),
    (
        "two serving on a GPU",
        [A, B],
        [serving("r", "a", [0], 1), serving("s", "b", [0], 1)],
        "replicas[1].gpus",
        "no GPU already served",
    ),
    (
        "weights over capacity",
        [model("a", 10), model("b", 10)],
        [prewarmed("r", "a", [0]), prewarmed("s", "b", [0])],
        "replicas[1].gpus",
        "GPUs with room",
    ),
    ("KV over capacity", [A], [serving("r", "a", [0], 13)], "replicas[0].kv_total_bytes", "<= 12884901888"),
    (
        "KV used over total",
        [A],
        [serving("r", "a", [0], 4, kv_used_bytes=5 * GIB)],
        "replicas[0].kv_used_bytes",
        "<= kv_total",
    ),
    (
        "lending while prewarmed",
        [A],
        [prewarmed("r", "a", [0], kv_total_bytes=GIB, kv_lent_bytes=GIB)],
        "replicas[0].kv_lent_bytes",
        "not serving",
    ),
    (
        "borrowing with no lender",
        [A],
        [prewarmed("r", "a", [0], borrowed=True)],
        "replicas[0].borrowed",
        "inside one serving replica",
    ),
    (
        "borrowing beyond the lent space",
        [A, B],
        [serving("r", "a", [0], 8, kv_lent_bytes=2 * GIB), prewarmed("s", "b", [0], borrowed=True)],
        "replicas[1].borrowed",
        "within the lent",
    ),
    ("progress over 1", [A], [prewarmed("r", "a", [0], progress=1.5)], "replicas[0].progress", "[0, 1]"),
    ("NaN progress", [A], [prewarmed("r", "a", [0], progress=math.nan)], "replicas[0].progress", "finite"),
    ("infinite since", [A], [prewarmed("r", "a", [0], since=math.inf)], "replicas[0].since", "finite"),
    ("bool in flight", [A], [serving("r", "a", [0], 4, inflight=True)], "replicas[0].inflight", "an integer"),
    (
        "negative KV used",
        [A],
        [serving("r", "a", [0], 4, kv_used_bytes=-1)],
        "replicas[0].kv_used_bytes",
        ">= 0",
    ),
]


CASES: list[tuple[str, Callable[[], object], str, str]] = [
    (
        "forecast of unknown model",
        lambda: snapshot([A], forecasts={"zz": (1, 2)}),
        "forecasts['zz']",
        "declared models",
    ),
    ("demand of unknown model", lambda: snapshot([A], demand={"zz": 1.0}), "demand['zz']", "declared models"),
    ("negative weights", lambda: bad_spec(weight_bytes=-5), "models['a'].spec.weight_bytes", ">= 1"),
    ("zero B", lambda: bad_spec(max_concurrency=0), "models['a'].spec.max_concurrency", ">= 1"),
    (
        "TP wider than any worker",
        lambda: bad_spec(tensor_parallel=8),
        "models['a'].spec.tensor_parallel",
        "<= 4",
    ),
    (
        "spec named differently",
        lambda: Snapshot(0.0, workers(), {"a": B}, ()),
        "models['a'].spec.name",
        "the key 'a'",
    ),
    (
        "negative capacity",
        lambda: snapshot([A], cluster=(Worker("w0", (Gpu(0, -1),)),)),
        "workers[0].gpus[0].capacity_bytes",
        ">= 1",
    ),
    (
        "duplicate GPU index",
        lambda: snapshot([A], cluster=(Worker("w0", (Gpu(0, GIB), Gpu(0, GIB))),)),
        "workers[0].gpus[1].index",
        "unique",
    ),
    ("duplicate worker", lambda: snapshot([A], cluster=workers(1) + workers(1)), "workers[1].name", "unique"),
    (
        "worker without GPU",
        lambda: snapshot([A], cluster=(Worker("w0", ()),)),
        "workers[0].gpus",
        "at least one GPU",
    ),
    ("NaN time", lambda: snapshot([A], now=math.nan), "now", "finite"),
    ("peak under mean", lambda: snapshot([A], forecasts={"a": (5, 2)}), "forecasts['a'].peak", "the mean (5"),
    ("negative demand", lambda: snapshot([A], demand={"a": -1.0}), "demand['a'].inflight", ">= 0"),
    (
        "min above max instances",
        lambda: snapshot([replace(A, min_instances=3, max_instances=2)]),
        "models['a'].max_instances",
        ">= 3",
    ),
    (
        "zero bandwidth",
        lambda: snapshot([replace(A, load_bandwidth_bytes_per_s=0.0)]),
        "models['a'].load_bandwidth_bytes_per_s",
        "> 0",
    ),
    ("zero tick", lambda: ReactiveConfig(tick_s=0), "reactive.tick_s", "> 0"),
    (
        "inverted thresholds",
        lambda: ReactiveConfig(scale_in_threshold=0.9),
        "reactive.scale_in_threshold",
        "[0, scale_out",
    ),
    ("zero chunk", lambda: KvConfig(chunk_bytes=0), "kv.chunk_bytes", ">= 1"),
    ("reserve over 1", lambda: KvConfig(min_reserve_fraction=2), "kv.min_reserve_fraction", "[0, 1]"),
    (
        "negative serving KV",
        lambda: PlacementConfig(min_serving_kv_bytes=-1),
        "placement.min_serving_kv_bytes",
        ">= 0",
    ),
]


@pytest.mark.parametrize(("build", "field", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_the_field_and_what_was_expected(
    build: Callable[[], object], field: str, expected: str
) -> None:
    with pytest.raises(SnapshotError) as caught:
        build()
    assert caught.value.field == field
    assert expected in caught.value.expected
    assert isinstance(caught.value, InvalidFieldError | WarmServeError)


@pytest.mark.parametrize(
    ("models", "replicas", "field", "expected"),
    [c[1:] for c in REPLICA_CASES],
    ids=[c[0] for c in REPLICA_CASES],
)
def test_a_bad_replica_is_refused_alike_when_built_and_when_swapped_in(
    models: list[ModelConfig], replicas: list[Replica], field: str, expected: str
) -> None:
    empty = snapshot(models)
    for build in (
        lambda: snapshot(models, replicas),
        lambda: empty.with_replicas(tuple(replicas)),
        lambda: empty.revise(empty.now + 1, empty.workers, tuple(replicas), {}, {}),
    ):
        with pytest.raises(SnapshotError) as caught:
            build()
        assert (caught.value.field, expected in caught.value.expected) == (field, True)


def test_replicas_carried_over_still_count_for_ids_and_shared_gpus() -> None:
    kept = serving("r", "a", [0], 8)
    before = snapshot([A, B], [kept])
    for added, field, expected in (
        (prewarmed("r", "b", [1]), "replicas[1].id", "unique"),
        (serving("s", "b", [0], 1), "replicas[1].gpus", "no GPU already served"),
        (prewarmed("s", "b", [0], progress=2.0), "replicas[1].progress", "[0, 1]"),
    ):
        with pytest.raises(SnapshotError) as caught:
            before.with_replicas((kept, added))
        assert (caught.value.field, expected in caught.value.expected) == (field, True)


def test_a_revised_snapshot_checks_its_new_inputs_and_carried_replicas_against_changed_workers() -> None:
    kept = serving("r", "a", [1], 8)
    before = snapshot([A, B], [kept], cluster=workers(1, 2))
    same = before.revise(5.0, before.workers, (kept,), {"a": Forecast(1, 2)}, {"a": Demand(1.0)})
    built = snapshot([A, B], [kept], cluster=workers(1, 2), forecasts={"a": (1, 2)}, demand={"a": 1.0})
    assert same == replace(built, now=5.0)
    for forecasts, demand, field in (
        ({"a": Forecast(3, 2)}, {}, "forecasts['a'].peak"),
        ({"zz": Forecast(1, 1)}, {}, "forecasts['zz']"),
        ({}, {"a": Demand(-1.0)}, "demand['a'].inflight"),
    ):
        with pytest.raises(SnapshotError) as caught:
            before.revise(5.0, before.workers, (kept,), forecasts, demand)
        assert caught.value.field == field
    with pytest.raises(SnapshotError) as caught:  # the worker lost GPU 1: the kept replica is checked again
        before.revise(5.0, workers(1, 1), (kept,), {}, {})
    assert caught.value.field == "replicas[0].gpus[0]"


def test_swapping_in_valid_replicas_gives_the_snapshot_the_constructor_builds() -> None:
    replicas = [serving("r", "a", [0], 8, kv_lent_bytes=4 * GIB), prewarmed("s", "b", [0], borrowed=True)]
    built = snapshot([A, B], replicas, forecasts={"a": (1, 3)}, demand={"a": 2.0})
    swapped = snapshot([A, B], forecasts={"a": (1, 3)}, demand={"a": 2.0}).with_replicas(tuple(replicas))
    assert swapped == built
    assert swapped.replicas == tuple(replicas)


def test_a_consistent_snapshot_is_accepted_and_frozen() -> None:
    snap = snapshot(
        [A, B],
        [serving("r", "a", [0], 8, kv_lent_bytes=4 * GIB), prewarmed("s", "b", [0], borrowed=True)],
        forecasts={"a": (1, 3)},
        demand={"a": 2.0},
    )
    assert snap.demand_of("b") == Demand(0.0)
    assert snap.forecasts["a"] == Forecast(1, 3)
    with pytest.raises(TypeError):
        snap.models["c"] = A  # type: ignore[index]
    assert snap.worker("w0").capacity(3) == 16 * GIB
    with pytest.raises(KeyError):
        snap.worker("w9")


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "state": st.sampled_from(ReplicaState),
            "role": st.sampled_from(Role),
            "since": st.floats(0, 1e6),
            "progress": st.floats(0, 1),
            "inflight": st.integers(0, 64),
            "kv_total_bytes": st.integers(0, 1 << 40),
            "kv_used_bytes": st.integers(0, 1 << 40),
            "kv_lent_bytes": st.integers(0, 1 << 40),
            "borrowed": st.booleans(),
        },
    )
)
def test_evolve_is_dataclasses_replace(changes: dict[str, Any]) -> None:
    base = serving("s", "a", [0, 1], 8, inflight=3, kv_used_bytes=GIB, kv_lent_bytes=2 * GIB)
    assert base.evolve(**changes) == replace(base, **changes)
