"""The baseline policies and the registry: real planning steps on small hand-checked clusters."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.operator.planning_builders import GIB, model, serving, snapshot, workers
from warmserve.operator.planning.plan import ColdStart, Evict, Prewarm, Promote
from warmserve.operator.policies.autoscale import AutoscaleConfig, AutoscaleState, autoscale_step
from warmserve.operator.policies.dedicated import DedicatedConfig, dedicated_step, instance_counts
from warmserve.operator.policies.muxserve import muxserve_layout
from warmserve.operator.policies.registry import NAMES, ForecastNeed, Sizing, policy_by_name
from warmserve.protocol.errors import InvalidFieldError


def test_registry_rejects_unknown_names_listing_the_accepted_ones() -> None:
    with pytest.raises(InvalidFieldError) as info:
        policy_by_name("serverless")
    assert info.value.field == "policy" and "autoscale" in str(info.value) and "oracle" in str(info.value)


def test_sized_policies_need_a_sizing() -> None:
    for name in ("dedicated", "dedicated-mean", "muxserve"):
        with pytest.raises(InvalidFieldError, match="sizing"):
            policy_by_name(name)


def test_registry_forecast_needs() -> None:
    sizing = Sizing({"a": 1.0}, {"a": 4.0})
    needs = {name: policy_by_name(name, sizing).forecast for name in NAMES}
    assert needs["warmserve"] is ForecastNeed.ONLINE and needs["oracle"] is ForecastNeed.ORACLE
    assert needs["no-forecast"] is ForecastNeed.NONE and needs["autoscale"] is ForecastNeed.NONE
    assert policy_by_name("muxserve", sizing).colocated and policy_by_name("muxserve", sizing).policy is None
    assert policy_by_name("no-kv-reservation").policy is not None


def _autoscale(snap, state=None, **config):  # type: ignore[no-untyped-def]
    return autoscale_step(snap, state or AutoscaleState(), AutoscaleConfig(**config))


def test_autoscale_cold_starts_on_a_request_and_never_prewarms() -> None:
    m = model("a")
    plan, _ = _autoscale(snapshot([m], demand={"a": 1.0}, forecasts={"a": (8.0, 16.0)}))
    kinds = [type(a) for a in plan]
    assert kinds == [ColdStart]
    assert not any(isinstance(a, Prewarm | Promote) for a in plan)


def test_autoscale_prefers_the_worker_whose_host_dram_holds_the_checkpoint() -> None:
    m = model("a")
    cluster = workers(2, gpus=2)
    state = AutoscaleState(resident={("a", "w1"): 90.0})
    plan, _ = _autoscale(snapshot([m], cluster=cluster, demand={"a": 1.0}), state)
    (start,) = plan
    assert isinstance(start, ColdStart) and start.worker == "w1" and "host DRAM" in start.reason
    plan, _ = _autoscale(snapshot([m], cluster=cluster, demand={"a": 1.0}, now=1000.0), state)
    (start,) = plan
    assert isinstance(start, ColdStart) and start.worker == "w0" and "disk" in start.reason


def test_autoscale_starts_a_wide_model_on_any_idle_gpus_of_a_worker() -> None:
    # ServerlessLLM asks for N free GPUs of one server: GPUs 1 and 3 do, though no aligned pair is idle
    small, wide = model("a"), model("b", tp=2)
    held = [serving("a1", "a", [0], 8, inflight=1), serving("a2", "a", [2], 8, inflight=1)]
    plan, _ = _autoscale(snapshot([small, wide], held, demand={"a": 2.0, "b": 1.0}))
    starts = [a for a in plan if isinstance(a, ColdStart) and a.model == "b"]
    assert [(s.worker, s.gpus) for s in starts] == [("w0", (1, 3))]


def test_autoscale_keeps_an_idle_instance_for_its_keep_alive_then_drops_it() -> None:
    m = model("a")
    inst = serving("a1", "a", [0], 8)
    state = AutoscaleState()
    for now in (100.0, 130.0):
        plan, state = _autoscale(snapshot([m], [inst], now=now), state, keep_alive_s=60.0)
        assert len(plan) == 0
    plan, state = _autoscale(snapshot([m], [inst], now=161.0), state, keep_alive_s=60.0)
    assert [type(a) for a in plan] == [Evict] and plan.actions[0].replica_id == "a1"


def test_the_no_keep_alive_variant_frees_an_idle_instance_at_once() -> None:
    m = model("a")
    idle = snapshot([m], [serving("a1", "a", [0], 8)], now=100.0)
    for name, evicts in (("autoscale", False), ("autoscale-no-keep-alive", True)):
        entry = policy_by_name(name)
        assert entry.policy is not None and entry.engine_per_replica
        plan, _ = entry.policy(idle, entry.initial_state)
        assert any(isinstance(a, Evict) for a in plan) is evicts, name


def test_the_no_keep_alive_variant_frees_an_instance_once_its_smoothed_load_is_gone() -> None:
    # ServerlessLLM's auto-scaler has no scale-in window: the instance goes when the smoothed load (2 s)
    # is zero, not 10 s later as WarmServe's window would hold it (that made keep-alive 0 a 10 s one)
    m = model("a")
    entry = policy_by_name("autoscale-no-keep-alive")
    assert entry.policy is not None
    state = entry.initial_state
    busy = snapshot([m], [serving("a1", "a", [0], 8, inflight=1)], demand={"a": 1.0}, now=100.0)
    plan, state = entry.policy(busy, state)
    assert len(plan) == 0
    evicted_at = None
    for tick in range(1, 25):
        now = 100.0 + 0.5 * tick
        plan, state = entry.policy(snapshot([m], [serving("a1", "a", [0], 8)], now=now), state)
        if any(isinstance(a, Evict) for a in plan):
            evicted_at = now
            break
    assert evicted_at is not None and evicted_at <= 102.5, evicted_at


def test_autoscale_never_drops_a_busy_instance() -> None:
    m = model("a")
    inst = serving("a1", "a", [0], 8, inflight=1)
    state = AutoscaleState()
    for now in (100.0, 500.0, 900.0):
        plan, state = _autoscale(snapshot([m], [inst], demand={"a": 1.0}, now=now), state, keep_alive_s=1.0)
        assert not any(isinstance(a, Evict) for a in plan)


def test_autoscale_rejects_a_negative_keep_alive() -> None:
    with pytest.raises(InvalidFieldError, match="keep_alive_s"):
        AutoscaleConfig(keep_alive_s=-1.0)


@given(
    st.dictionaries(st.sampled_from("abcdef"), st.floats(0, 200), min_size=1),
    st.integers(1, 16),
)
def test_dedicated_counts_fit_the_cluster_and_give_each_model_one_while_gpus_last(
    concurrency: dict[str, float], gpus: int
) -> None:
    models = {n: model(n, b=8) for n in concurrency}
    counts = instance_counts(models, concurrency, gpus)
    assert sum(counts.values()) <= gpus
    assert sum(1 for c in counts.values() if c >= 1) == min(len(models), gpus)
    wanted = {n: max(1, math.ceil(v / 8)) for n, v in concurrency.items()}
    assert all(counts[n] <= wanted[n] for n in models)
    if sum(wanted.values()) <= gpus:
        assert counts == wanted


def test_dedicated_starts_its_layout_once_and_never_scales_in() -> None:
    models = [model("a"), model("b")]
    config = DedicatedConfig({"a": 20.0, "b": 1.0})
    plan, _ = dedicated_step(snapshot(models), None, config)
    started = [a.model for a in plan if isinstance(a, ColdStart)]
    assert sorted(started) == ["a", "a", "a", "b"]
    held = [serving(f"x{i}", "a", [i], 8) for i in range(3)] + [serving("y", "b", [3], 8)]
    plan, _ = dedicated_step(snapshot(models, held, demand={}), None, config)
    assert len(plan) == 0


def test_muxserve_places_every_model_with_shares_and_quotas_that_add_up() -> None:
    models = {n: model(n, gib=4) for n in "abcde"}
    cluster = workers(1, gpus=2, gib=16)
    units = muxserve_layout(models, cluster, {"a": 30.0, "b": 4.0, "c": 1.0, "d": 0.5, "e": 0.0})
    placed = {n for u in units for n in u.models}
    assert placed == set(models)
    for unit in units:
        assert sum(unit.compute_share.values()) == pytest.approx(1.0)
        weights = sum(models[n].spec.shard_bytes for n in unit.models)
        assert weights + sum(unit.kv_quota_bytes.values()) <= 16 * (1 << 30)
    heavy = [u for u in units if "a" in u.models]
    assert len(heavy) == 2  # the popular model is on both units


def test_muxserve_splits_every_colocated_model_over_the_whole_unit() -> None:
    # 8 GiB of the TP-2 model per GPU; the 12 GiB single-GPU model fits beside it only split in two
    models = {"wide": model("wide", gib=16, tp=2), "narrow": model("narrow", gib=12)}
    (unit,) = muxserve_layout(models, workers(1, gpus=2, gib=16), {"wide": 1.0, "narrow": 1.0})
    assert unit.gpus == (0, 1) and unit.models == ("narrow", "wide")
    assert sum(unit.kv_quota_bytes.values()) == pytest.approx(2 * GIB, abs=2)  # 16 - 8 - 6 GiB per GPU


def test_muxserve_rejects_a_model_that_fits_nowhere() -> None:
    with pytest.raises(InvalidFieldError, match="big"):
        muxserve_layout({"big": model("big", gib=40)}, workers(1, gpus=2, gib=16), {"big": 1.0})
