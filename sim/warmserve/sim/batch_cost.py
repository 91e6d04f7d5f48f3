"""Iteration costs from batch aggregates: :func:`warmserve.worker.timing.iteration_seconds` without the
per-sequence tuples, and the closed-form duration of a run of decode-only iterations.

The simulator advances a running batch many iterations at a time (until the next sequence finishes or
a request arrives), so it needs the time of ``k`` iterations at once. The timing model's cost depends on a
batch only through sums (new tokens, attended tokens, context read), so both functions here mirror
its formula exactly on those sums; ``tests/sim/test_batch_cost.py`` checks them against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from warmserve.worker.timing import GpuProfile, ModelShape


@dataclass(frozen=True, slots=True)
class Costing:
    """One instance's constants: its shape on ``tp`` GPUs of ``gpu``; ``slowdown`` ≥ 1 stretches every
    iteration (a compute share below one, for colocated models)."""

    shape: ModelShape
    gpu: GpuProfile
    tp: int
    slowdown: float = 1.0

    def iteration(self, prefill_sum: int, prefill_attended: int, decoders: int, context_sum: int) -> float:
        """Seconds of one iteration: prompts totalling ``prefill_sum`` tokens (attending
        ``prefill_attended`` = Σ p(p+1)/2) and ``decoders`` running sequences with ``context_sum`` context."""
        if prefill_sum == 0 and decoders == 0:
            return 0.0
        shape = self.shape
        new = prefill_sum + decoders
        flops = 2.0 * shape.params * new + shape.attention_flops(prefill_attended + context_sum)
        moved = shape.weight_bytes + context_sum * shape.kv_bytes_per_token + new * shape.kv_bytes_per_token
        seconds = max(flops / self.gpu.peak_flops, moved / self.gpu.memory_bandwidth) / self.tp
        return (seconds + self.gpu.step_overhead_s) * self.slowdown

    def decode_run(self, decoders: int, context_sum: int, k: int) -> float:
        """Seconds of ``k`` decode-only iterations of ``decoders`` sequences, starting from ``context_sum``
        (each iteration adds one token to every context)."""
        if k <= 0 or decoders == 0:
            return 0.0
        shape, gpu, n = self.shape, self.gpu, decoders
        per_attended = 4.0 * shape.layers * shape.heads * shape.head_dim
        # iteration j: compute = c0 + c1·j, memory = m0 + m1·j (both in seconds, before /tp)
        c0 = (2.0 * shape.params * n + per_attended * context_sum) / gpu.peak_flops
        c1 = per_attended * n / gpu.peak_flops
        kv = shape.kv_bytes_per_token
        m0 = (shape.weight_bytes + context_sum * kv + n * kv) / gpu.memory_bandwidth
        m1 = n * kv / gpu.memory_bandwidth
        total = _sum_max_linear(c0, c1, m0, m1, k) / self.tp + k * gpu.step_overhead_s
        return total * self.slowdown

    def iterations_within(self, decoders: int, context_sum: int, k: int, elapsed: float) -> int:
        """How many of ``k`` decode iterations end within ``elapsed`` seconds (binary search)."""
        lo, hi = 0, k
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.decode_run(decoders, context_sum, mid) <= elapsed:
                lo = mid
            else:
                hi = mid - 1
        return lo


def _sum_max_linear(a0: float, a1: float, b0: float, b1: float, k: int) -> float:
    """Σ_{j<k} max(a0 + a1·j, b0 + b1·j), splitting the range where the two lines cross."""
    if a1 == b1:
        return _arith(max(a0, b0), a1, 0, k)
    cross = (b0 - a0) / (a1 - b1)  # the lines meet at j = cross
    split = min(max(math.ceil(cross), 0), k)
    low, high = ((a0, a1), (b0, b1)) if a1 < b1 else ((b0, b1), (a0, a1))
    return _arith(low[0], low[1], 0, split) + _arith(high[0], high[1], split, k)


def _arith(c0: float, c1: float, start: int, stop: int) -> float:
    """Σ_{j=start}^{stop-1} (c0 + c1·j)."""
    count = stop - start
    if count <= 0:
        return 0.0
    return c0 * count + c1 * (start + stop - 1) * count / 2.0
