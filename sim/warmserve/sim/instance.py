"""A simulated serving instance: continuous batching with a cap B, as the worker's engines batch
(:mod:`warmserve.worker.engines.batching`), timed by the timing model through :mod:`.batch_cost`.

Same rules as the fake engine: requests wait in arrival order; before each iteration the head joins
while fewer than B run and its KV reservation ``(prompt + max_tokens) × bytes per token`` fits (the same
first-fit :class:`KvSpace`), nobody overtakes a head that does not fit; joiners are prefilled in the
iteration and emit their first token at its end; every running sequence decodes one token per iteration.
What differs is only bookkeeping: an iteration without joiners is followed by identical ones until a
sequence finishes or a request arrives, so such a run is one *segment* costed in closed form and cut
short (after the iteration in progress) when a request arrives that could join.

The simulator owns the clock: it calls :meth:`enqueue` and :meth:`complete` and reads :attr:`seg_end`.
A request whose reservation exceeds the whole KV space is refused (``enqueue`` returns ``False``), as the
engines refuse it with an error naming ``max_tokens``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from warmserve.sim.batch_cost import Costing
from warmserve.worker.engines.kv_space import KvRange, KvSpace


class SimInstance:
    """One instance of one model; requests are ids into the simulator's ``prompts``/``outputs`` lists."""

    def __init__(
        self,
        costing: Costing,
        max_batch: int,
        kv_bytes: int,
        kv_bytes_per_token: int,
        prompts: Sequence[int],
        outputs: Sequence[int],
    ) -> None:
        self.costing = costing
        self.max_batch = max_batch
        self.space = KvSpace(kv_bytes)
        self.kv_per_token = max(kv_bytes_per_token, 1)
        self.prompts = prompts
        self.outputs = outputs
        self.waiting: deque[int] = deque()
        self.kv: dict[int, KvRange] = {}
        self.end_clock: dict[int, int] = {}  # running request -> clock at which it emits its last token
        self.clock = 0  # iterations run so far
        self.prompt_sum = 0  # over running sequences
        self.join_clock: dict[int, int] = {}  # running request -> clock of its prefill iteration
        self.join_sum = 0  # Σ join clock over running sequences
        self.joiners: list[int] = []  # joining in the current segment (a one-iteration prefill)
        self.seg_start = 0.0
        self.seg_end = math.inf  # when the current segment ends; inf when idle
        self.seg_k = 0
        self.version = 0  # bumped whenever seg_end changes, so stale events are ignored
        self.busy_s = 0.0

    @property
    def inflight(self) -> int:
        """Requests queued here and not finished: waiting, being prefilled (joiners) or decoding, as
        the engines count them; the gateway's cap and a drain's end both read it."""
        return len(self.waiting) + len(self.joiners) + len(self.end_clock)

    @property
    def kv_used_bytes(self) -> int:
        return self.space.used_bytes

    def enqueue(self, rid: int, now: float) -> bool:
        """Queue request ``rid``; ``False`` if it can never fit. Starts or cuts a segment if it can join."""
        if (self.prompts[rid] + self.outputs[rid]) * self.kv_per_token > self.space.capacity:
            return False
        could_join = not self.waiting and len(self.end_clock) < self.max_batch
        self.waiting.append(rid)
        self._wake(now, could_join)
        return True

    def resize(self, capacity: int, now: float) -> None:
        """Set the KV space to ``capacity`` bytes. The engines admit waiting requests at once when their
        space grows (``resize_kv``), so a head that may now fit joins after the iteration in progress."""
        grew = capacity > self.space.capacity
        self.space.capacity = capacity
        if grew and self.waiting:
            self._wake(now, len(self.end_clock) < self.max_batch)

    def _wake(self, now: float, could_join: bool) -> None:
        """Start, re-plan or cut the current segment for requests that arrived or may now join."""
        if self.seg_end == math.inf:
            self._start(now)
        elif now <= self.seg_start:
            self._restart(now)
        elif could_join and not self.joiners and self.seg_k > 1:
            self._cut(now)

    def _restart(self, now: float) -> None:
        """Plan the segment starting at ``now`` again: requests arriving at the same instant all join
        its iteration, as they would in an engine that plans when its scheduler next runs."""
        for rid in reversed(self.joiners):
            self.space.free(self.kv.pop(rid))
            self.waiting.appendleft(rid)
        self.joiners = []
        self._start(now)

    def _cut(self, now: float) -> None:
        """End the running decode segment after the iteration in progress at ``now``."""
        n, ctx = len(self.end_clock), self._context_sum()
        done = self.costing.iterations_within(n, ctx, self.seg_k, now - self.seg_start)
        k = min(done + 1, self.seg_k)
        if k < self.seg_k:
            self.seg_k = k
            self._set_end(self.seg_start + self.costing.decode_run(n, ctx, k))

    def complete(self, now: float) -> tuple[list[int], list[int]]:
        """End the current segment at ``now`` (= :attr:`seg_end`); return the requests that emitted their
        first token and those that finished, then start the next segment if any work is left."""
        self.busy_s += now - self.seg_start
        self.clock += self.seg_k
        first = self.joiners
        for rid in first:
            self.end_clock[rid] = self.clock + self.outputs[rid] - 1
            self.prompt_sum += self.prompts[rid]
            self.join_sum += self.clock
            self.join_clock[rid] = self.clock
        self.joiners = []
        finished = [rid for rid, end in self.end_clock.items() if end <= self.clock]
        for rid in finished:
            del self.end_clock[rid]
            self.prompt_sum -= self.prompts[rid]
            self.join_sum -= self.join_clock.pop(rid)
            self.space.free(self.kv.pop(rid))
        self._start(now)
        return first, finished

    def _context_sum(self) -> int:
        n = len(self.end_clock)
        return self.prompt_sum + n * (1 + self.clock) - self.join_sum

    def _start(self, now: float) -> None:
        self.seg_start = now
        self._admit()
        n = len(self.end_clock)
        if self.joiners:
            prompts = [self.prompts[r] for r in self.joiners]
            attended = sum(p * (p + 1) // 2 for p in prompts)
            self.seg_k = 1
            self._set_end(now + self.costing.iteration(sum(prompts), attended, n, self._context_sum()))
        elif n:
            self.seg_k = min(self.end_clock.values()) - self.clock
            self._set_end(now + self.costing.decode_run(n, self._context_sum(), self.seg_k))
        else:
            self.seg_k = 0
            self._set_end(math.inf)

    def _admit(self) -> None:
        while self.waiting and len(self.end_clock) + len(self.joiners) < self.max_batch:
            rid = self.waiting[0]
            kv = self.space.allocate(max((self.prompts[rid] + self.outputs[rid]) * self.kv_per_token, 1))
            if kv is None:
                return
            self.waiting.popleft()
            self.kv[rid] = kv
            self.joiners.append(rid)

    def _set_end(self, end: float) -> None:
        self.seg_end = end
        self.version += 1
