"""Evict-aware placement, cold scale-out GPU choice and promotion choice on hand-checked clusters."""

from __future__ import annotations

from dataclasses import replace

from tests.operator.planning_builders import GIB, model, prewarmed, serving, snapshot, workers
from warmserve.operator.planning.occupancy import Occupancy, is_laminar_with
from warmserve.operator.planning.placement import (
    PlacementConfig,
    choose_cold,
    choose_prewarm,
    choose_promotion,
)
from warmserve.operator.planning.snapshot import Gpu, Replica, Worker
from warmserve.protocol.state import ReplicaState

CONFIG = PlacementConfig()
MIB = 1 << 20
SINGLE = [model("new", 4), model("p", 4), model("q", 4), model("big", 12)]
MODELS = [*SINGLE, model("t", 8, tp=2), model("u", 8, tp=2)]


def occupancy(replicas: list[Replica], scores: dict[str, float], **kwargs: object) -> Occupancy:
    """An index over one worker of 4 GPUs unless ``cluster`` says otherwise (1-GPU ones: no TP 2 model)."""
    cluster = kwargs.get("cluster", workers(1, 4))
    models = MODELS if max(len(w.gpus) for w in cluster) >= 2 else SINGLE  # type: ignore[attr-defined]
    return Occupancy(snapshot(models, replicas, **kwargs), scores)  # type: ignore[arg-type]


def test_an_empty_gpu_wins_outright() -> None:
    occ = occupancy([prewarmed("p0", "p", [0])], {"p0": 1.0}, cluster=workers(1, 2))
    choice = choose_prewarm(occ, "new", 5.0, CONFIG)
    assert choice is not None and (choice.gpus, choice.evict, choice.top) == ((1,), (), True)


def test_it_prefers_becoming_the_top_replica_then_the_least_overlapped_score() -> None:
    replicas = [prewarmed("p0", "p", [0]), prewarmed("q1", "q", [1])]
    occ = occupancy(replicas, {"p0": 10.0, "q1": 1.0}, cluster=workers(1, 2))
    assert choose_prewarm(occ, "new", 5.0, CONFIG).gpus == (1,)  # type: ignore[union-attr]
    occ = occupancy(replicas, {"p0": 1.0, "q1": 10.0}, cluster=workers(1, 2))
    assert choose_prewarm(occ, "new", 5.0, CONFIG).gpus == (0,)  # type: ignore[union-attr]
    occ = occupancy(replicas, {"p0": 3.0, "q1": 2.0}, cluster=workers(1, 2))
    choice = choose_prewarm(occ, "new", 50.0, CONFIG)  # top on both: least overlapped
    assert choice is not None and choice.gpus == (1,) and choice.overlapped == 2.0


def test_it_evicts_only_lower_score_replicas_and_only_when_allowed() -> None:
    replicas = [prewarmed("b0", "big", [0], worker="w0"), prewarmed("b1", "big", [0], worker="w1")]
    occ = occupancy(replicas, {"b0": 8.0, "b1": 3.0}, cluster=workers(2, 1, gib=14))  # 2 GiB free each
    assert choose_prewarm(occ, "big", 50.0, CONFIG) is None  # `big` is on both GPUs already
    choice = choose_prewarm(occ, "new", 5.0, CONFIG)
    assert choice is not None and choice.worker == "w1" and [r.id for r in choice.evict] == ["b1"]
    assert choose_prewarm(occ, "new", 2.0, CONFIG) is None  # both residents are worth more
    assert choose_prewarm(occ, "new", 5.0, PlacementConfig(evict_aware=False)) is None


def test_gpu_sets_stay_laminar() -> None:
    # an observed TP-2 replica on GPUs 1-2 crosses both aligned pairs (0-1 and 2-3)
    occ = occupancy([prewarmed("t12", "t", [1, 2])], {"t12": 1.0})
    assert choose_prewarm(occ, "u", 5.0, CONFIG) is None
    occ.remove("t12")
    assert choose_prewarm(occ, "u", 5.0, CONFIG).gpus == (0, 1)  # type: ignore[union-attr]
    assert is_laminar_with(0b0011, [0b0001, 0b1100, 0b1111])
    assert not is_laminar_with(0b0011, [0b0110])


def test_a_prewarm_may_borrow_kv_space_lent_by_a_serving_replica() -> None:
    lender = serving("s", "p", [0], 12, kv_lent_bytes=6 * GIB)
    occ = occupancy([lender, prewarmed("q0", "q", [0], borrowed=True)], {"q0": 9.0}, cluster=workers(1, 1))
    choice = choose_prewarm(occ, "new", 5.0, CONFIG)
    assert choice is None  # 6 GiB lent, 4 used by q0: no room for 4 more, and q0 is worth more
    choice = choose_prewarm(occ, "new", 10.0, CONFIG)
    assert choice is not None and choice.borrowed and [r.id for r in choice.evict] == ["q0"]
    busy = replace(lender, state=ReplicaState.PROMOTING)
    assert choose_prewarm(occupancy([busy], {}, cluster=workers(1, 1)), "new", 5.0, CONFIG) is None


def test_the_cold_start_gpu_is_idle_and_covered_by_the_lowest_score() -> None:
    replicas = [
        serving("s", "p", [0], 8),
        prewarmed("q1", "q", [1]),
        prewarmed("new2", "new", [2]),  # holds the model: a promotion's job, not a cold start's
        prewarmed("p3", "p", [3]),
        prewarmed("q3", "q", [3]),
    ]
    # only single-GPU models declared: no block of a wider model to keep whole
    occ = Occupancy(snapshot(SINGLE, replicas), {"q1": 5.0, "p3": 1.0, "q3": 1.0})
    choice = choose_cold(occ, "new", CONFIG)
    assert choice is not None and choice.gpus == (3,) and {r.id for r in choice.evict} == {"p3", "q3"}
    occ = Occupancy(snapshot(SINGLE, replicas), {"q1": 1.0, "p3": 1.0, "q3": 1.0})
    assert choose_cold(occ, "new", CONFIG).gpus == (1,)  # type: ignore[union-attr]  # same score, fewer replicas


def test_narrow_owners_pack_into_blocks_that_already_serve() -> None:
    # TP-2 models are declared: GPUs 0-1 and 2-3 are the blocks a TP-2 replica can start on
    replicas = [serving("s", "p", [0], 8), prewarmed("q1", "q", [1])]
    occ = occupancy(replicas, {"q1": 5.0})
    choice = choose_cold(occ, "new", CONFIG)  # GPU 1 (evicting q1) keeps block 2-3 whole for a TP-2 start
    assert choice is not None and choice.gpus == (1,) and [r.id for r in choice.evict] == ["q1"]
    assert choose_cold(occ, "t", CONFIG).gpus == (2, 3)  # type: ignore[union-attr]
    occ.remove("s")  # nothing serves: any first owner breaks a block, so the lowest score decides
    assert choose_cold(occ, "new", CONFIG).gpus == (0,)  # type: ignore[union-attr]


def test_promotion_and_prewarm_prefer_blocks_that_already_serve() -> None:
    replicas = [serving("s", "p", [0], 8), prewarmed("new1", "new", [1]), prewarmed("new3", "new", [3])]
    occ = occupancy(replicas, {"new1": 1.0, "new3": 1.0})
    assert choose_promotion(occ, "new", CONFIG).replica.id == "new1"  # type: ignore[union-attr]
    occ = occupancy([serving("s", "p", [0], 8)], {})
    assert choose_prewarm(occ, "q", 5.0, CONFIG).gpus == (1,)  # type: ignore[union-attr]


def test_a_cold_start_needs_room_for_weights_and_some_kv() -> None:
    cluster = (Worker("w0", (Gpu(0, 12 * GIB),)),)
    occ = occupancy([], {}, cluster=cluster)
    assert choose_cold(occ, "big", CONFIG) is None  # exactly its weights, no KV left
    roomy = (Worker("w0", (Gpu(0, 12 * GIB + 2 * MIB),)),)
    assert choose_cold(occupancy([], {}, cluster=roomy), "big", CONFIG) is not None  # one chunk


def test_serving_needs_room_for_one_request_of_the_models_maximum_length() -> None:
    """The worker never lends (and refuses to promote with less than) the KV space of one request of
    ``context_length`` tokens: the planner places a serving replica only where that fits."""
    big = SINGLE[3]
    longest = replace(big, spec=replace(big.spec, context_length=1024, kv_bytes_per_token=4096))  # 4 MiB
    cluster = (Worker("w0", (Gpu(0, 12 * GIB + 2 * MIB), Gpu(1, 12 * GIB + 4 * MIB))),)
    occ = Occupancy(snapshot([longest], [prewarmed("b0", "big", [0])], cluster=cluster), {"b0": 1.0})
    assert choose_promotion(occ, "big", CONFIG) is None  # 2 MiB of KV beside its weights: too little
    assert choose_cold(occ, "big", CONFIG).gpus == (1,)  # type: ignore[union-attr]


def test_promotion_prefers_loaded_replicas_then_the_least_overlapped() -> None:
    replicas = [
        replace(prewarmed("loading", "new", [0]), state=ReplicaState.LOADING, progress=0.9),
        prewarmed("crowded", "new", [1]),
        prewarmed("q1", "q", [1]),
        prewarmed("alone", "new", [2]),
        prewarmed("borrowed", "new", [3], borrowed=True),
        serving("s", "p", [3], 8, kv_lent_bytes=4 * GIB),
    ]
    occ = occupancy(replicas, {"q1": 2.0})
    promotion = choose_promotion(occ, "new", CONFIG)
    assert promotion is not None and promotion.replica.id == "alone" and promotion.evict == ()
    occ.remove("alone")
    promotion = choose_promotion(occ, "new", CONFIG)
    assert (
        promotion is not None
        and promotion.replica.id == "crowded"
        and [r.id for r in promotion.evict] == ["q1"]
    )
    occ.remove("crowded")
    assert choose_promotion(occ, "new", CONFIG).replica.id == "loading"  # type: ignore[union-attr]
    occ.remove("loading")
    assert choose_promotion(occ, "new", CONFIG) is None  # a borrowed replica cannot be served there
