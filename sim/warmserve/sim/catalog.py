"""The simulated cluster and its models: nodes × GPUs of one timing profile, and a model catalog.

Models take their shapes from the timing model's registry (:data:`MODEL_SHAPES`), cycling through
``shapes`` (``name`` or ``name:tp``) in popularity order; a log's own models take their sizes from
:mod:`.sizes` instead (:func:`sized_catalog`, which both build on). Every model gets cap ``B`` and TTFT SLO
``slo_ttft_s``; its planner cold-start cost is a load from local disk (what a cold start costs when the
checkpoint is not in host memory), so prewarm scores rank models by the load a prewarm saves.
Unknown profile or shape names, a tensor parallelism wider than a node, and nonsensical sizes raise
:class:`InvalidFieldError` naming the option and what is accepted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from warmserve.operator.planning.snapshot import ModelConfig
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import ModelSpec
from warmserve.sim.sizes import ModelSize
from warmserve.worker.timing import GpuProfile, Tier, gpu_profile, load_seconds, model_shape

#: The default catalog: a mix of 7-13B models on one GPU and a 70B model on four.
DEFAULT_SHAPES: tuple[str, ...] = ("llama3-8b", "llama2-13b", "llama2-7b", "llama2-70b:4")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """``nodes`` workers of ``gpus_per_node`` GPUs of ``profile``; each node caches checkpoints in
    ``host_cache_gib`` GiB of host DRAM."""

    nodes: int = 2
    gpus_per_node: int = 8
    profile: str = "h100"
    host_cache_gib: float = 1024.0

    def __post_init__(self) -> None:
        gpu_profile(self.profile, "gpu-profile")
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise InvalidFieldError(
                "nodes/gpus", "at least one node of at least one GPU", (self.nodes, self.gpus_per_node)
            )
        if not (math.isfinite(self.host_cache_gib) and self.host_cache_gib >= 0):
            raise InvalidFieldError("host-cache-gib", "a finite number >= 0", self.host_cache_gib)

    @property
    def gpu(self) -> GpuProfile:
        return gpu_profile(self.profile, "gpu-profile")

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def parse_shape(text: str) -> tuple[str, int]:
    """``name`` or ``name:tp`` -> (shape name, tensor parallelism)."""
    name, _, tp = text.partition(":")
    model_shape(name, "shapes")
    if tp and (not tp.isdigit() or int(tp) < 1):
        raise InvalidFieldError("shapes", "name or name:tp with tp a positive integer", text)
    return name, int(tp) if tp else 1


def catalog(
    names: Sequence[str], shapes: Sequence[str], cluster: ClusterSpec, max_concurrency: int, slo_ttft_s: float
) -> dict[str, ModelConfig]:
    """A :class:`ModelConfig` per name, shapes cycling in order."""
    if not shapes:
        raise InvalidFieldError("shapes", f"at least one of {list(DEFAULT_SHAPES)}", shapes)
    sizes = {}
    for i, name in enumerate(names):
        shape_name, tp = parse_shape(shapes[i % len(shapes)])
        shape = model_shape(shape_name, "shapes")
        sizes[name] = ModelSize(shape.weight_bytes, tp, shape.kv_bytes_per_token, shape_name)
    return sized_catalog(sizes, cluster, max_concurrency, slo_ttft_s, "shapes")


def sized_catalog(
    sizes: Mapping[str, ModelSize],
    cluster: ClusterSpec,
    max_concurrency: int,
    slo_ttft_s: float,
    option: str = "model-sizes",
) -> dict[str, ModelConfig]:
    """A :class:`ModelConfig` per model of ``sizes``; a size the cluster cannot hold (a tensor parallelism
    wider than a node, a shard as large as a GPU) raises :class:`InvalidFieldError` on ``option``."""
    if max_concurrency < 1:
        raise InvalidFieldError("max-concurrency", "an integer >= 1", max_concurrency)
    if not (math.isfinite(slo_ttft_s) and slo_ttft_s > 0):
        raise InvalidFieldError("slo-ttft", "a finite number of seconds > 0", slo_ttft_s)
    models = {}
    for name, size in sizes.items():
        if size.tensor_parallel > cluster.gpus_per_node:
            raise InvalidFieldError(
                option,
                f"a tensor parallelism <= {cluster.gpus_per_node} (GPUs per node), "
                f"not {size.tensor_parallel}",
                name,
            )
        spec = ModelSpec(
            name,
            f"/cache/{size.shape or name}",
            size.weight_bytes,
            tensor_parallel=size.tensor_parallel,
            kv_bytes_per_token=size.kv_bytes_per_token,
            max_concurrency=max_concurrency,
            engine_args={"shape": size.shape} if size.shape else {},
        )
        if spec.shard_bytes >= cluster.gpu.memory_bytes:
            raise InvalidFieldError(
                option,
                f"a shard under one GPU's {cluster.gpu.memory_bytes} bytes, not {spec.shard_bytes}",
                name,
            )
        disk = load_seconds(size.weight_bytes, Tier.DISK, cluster.gpu, size.tensor_parallel)
        models[name] = ModelConfig(spec, spec.shard_bytes / disk, slo_ttft_s=slo_ttft_s)
    return models
