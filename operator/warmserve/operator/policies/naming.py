"""Replica ids for the baselines' cold starts: readable, and unique among the ids already taken."""

from __future__ import annotations


def replica_id(model: str, worker: str, gpus: tuple[int, ...], taken: set[str]) -> str:
    """``model@worker:g0-g1``, with ``#n`` appended if taken; the id is added to ``taken``."""
    base = f"{model}@{worker}:{'-'.join(map(str, gpus))}"
    rid, n = base, 1
    while rid in taken:
        n += 1
        rid = f"{base}#{n}"
    taken.add(rid)
    return rid
