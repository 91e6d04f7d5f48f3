"""kopf's last-handled state of each object (its "diff base": the essence it compares a new version with,
to tell a create from an update from nothing), kept in the operator's memory (docs/operator.md,
"Status cadence").

kopf's default keeps it in an annotation, ``operator.warmserve.io/last-handled-configuration``: a merge
patch of every object after its first handler run (200 of the 1828 requests of the 200-model scale run),
and a copy of the spec in every list and watch event of the object after. In memory, an operator that
starts again has no diff base: it sees every object as created and runs its change handler once more,
which its handlers take as the resume they also are (level-triggered: the same document changes nothing).
An object's entry is dropped by :meth:`MemoryDiffBase.forget` when it is deleted.
"""

from __future__ import annotations

from typing import Any

import kopf


class MemoryDiffBase(kopf.DiffBaseStorage):
    """The last handled essence of each object by uid."""

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, kopf.BodyEssence] = {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._essences.get(str(body.metadata.uid))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence, **_: Any) -> None:
        self._essences[str(body.metadata.uid)] = essence

    def forget(self, uid: str) -> None:
        """Drop a deleted object's entry (none: nothing happens)."""
        self._essences.pop(uid, None)
