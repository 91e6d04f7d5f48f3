"""The ``muxserve`` baseline: static, popularity-aware colocation of several models on shared GPUs
(Duan et al., "MuxServe: Flexible Spatial-Temporal Multiplexing for Multiple LLM Serving", ICML 2024).

The layout is computed once from each model's expected load (its mean concurrency in the trace) and
never changes, so there are no cold starts after the start: every model is always resident.

- Each model gets replicas in proportion to its expected load, at least one (MuxServe's popularity-aware
  placement); replicas go, heaviest first, to the unit (an aligned block of GPUs of the widest tensor
  parallelism) with the least load so far that has room for the weights and holds no replica of it.
- Every model on a unit is parallelized over all the unit's GPUs (MuxServe runs each LLM of a mesh with
  intra-operator parallelism across the whole mesh and multiplexes them by SM share), so its weights
  and KV space are split over those GPUs and its iterations run at that tensor parallelism.
- On a unit, the memory left after all weights is split into fixed KV quotas, and the compute into
  fixed shares, both in proportion to each colocated model's expected load (MuxServe's unified KV cache
  with per-LLM quotas, and its SM partition). A model's iterations on a shared unit therefore take
  ``iteration time / share``: sharing slows each request, and a small quota caps its batch by KV space.

What it does not model: MuxServe's adaptive batch scheduling of prefill and decode jobs across models
(we give each a fixed share instead), and its enumeration of mesh sizes (units are one block size).
The worker protocol has one serving replica per GPU, so this layout runs in the simulator only.
Bad input (a model wider than every worker, or one that fits on no unit) raises
:class:`InvalidFieldError` naming the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from warmserve.operator.planning.snapshot import Gpu, ModelConfig, Worker
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import ModelSpec


@dataclass(frozen=True, slots=True)
class MuxUnit:
    """A block of GPUs on one worker, the models colocated there, their compute shares (fractions
    summing to 1) and their KV quotas (bytes per GPU)."""

    worker: str
    gpus: tuple[int, ...]
    models: tuple[str, ...]
    compute_share: Mapping[str, float]
    kv_quota_bytes: Mapping[str, int]


def muxserve_layout(
    models: Mapping[str, ModelConfig], workers: tuple[Worker, ...], load: Mapping[str, float]
) -> tuple[MuxUnit, ...]:
    """The static layout for ``models`` on ``workers`` given each model's expected concurrency."""
    size = max(m.spec.tensor_parallel for m in models.values())
    units = [(w.name, w.gpus[i : i + size]) for w in workers for i in range(0, len(w.gpus) - size + 1, size)]
    if not units:
        raise InvalidFieldError("cluster", f"workers with at least {size} GPUs (the widest model's TP)", size)
    weight = {n: max(load.get(n, 0.0), 1e-3) / m.spec.max_concurrency for n, m in models.items()}
    total = sum(weight.values())
    replicas = {n: max(1, min(len(units), round(weight[n] / total * len(units)))) for n in models}
    placed: list[dict[str, float]] = [{} for _ in units]
    used = [0] * len(units)
    order = sorted(((weight[n] / replicas[n], n) for n in models for _ in range(replicas[n])), reverse=True)
    for per_replica, name in order:
        shard = on_unit(models[name].spec, size).shard_bytes
        fits = [
            i
            for i, (_, gpus) in enumerate(units)
            if name not in placed[i] and used[i] + shard < min(g.capacity_bytes for g in gpus)
        ]
        if not fits:
            if not any(name in p for p in placed):
                raise InvalidFieldError(f"models[{name!r}]", "weights that fit on some GPU unit", shard)
            continue
        best = min(fits, key=lambda i: (sum(placed[i].values()), i))
        placed[best][name] = per_replica
        used[best] += shard
    return tuple(
        _unit(worker, gpus, placed[i], used[i]) for i, (worker, gpus) in enumerate(units) if placed[i]
    )


def on_unit(spec: ModelSpec, size: int) -> ModelSpec:
    """The model as it runs on a unit of ``size`` GPUs: parallelized over all of them (weights, KV space
    and iterations split ``size`` ways)."""
    return replace(spec, tensor_parallel=size)


def _unit(worker: str, gpus: tuple[Gpu, ...], loads: dict[str, float], used: int) -> MuxUnit:
    capacity = min(g.capacity_bytes for g in gpus)
    total = sum(loads.values())
    share = {n: v / total for n, v in loads.items()}
    free = capacity - used
    return MuxUnit(
        worker=worker,
        gpus=tuple(g.index for g in gpus),
        models=tuple(sorted(loads)),
        compute_share=MappingProxyType(share),
        kv_quota_bytes=MappingProxyType({n: math.floor(free * s) for n, s in share.items()}),
    )
