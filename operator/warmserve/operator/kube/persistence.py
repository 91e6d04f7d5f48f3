"""What kopf keeps per object, kept so that a handled object costs the API server no write of kopf's own
beyond the finalizer (docs/operator.md, "Status cadence").

- Its last-handled state (its "diff base": the essence it compares a new version with, to tell a create
  from an update from nothing) in the operator's memory, :class:`MemoryDiffBase`. kopf's default keeps it
  in an annotation, ``operator.warmserve.io/last-handled-configuration``: a merge patch of every object
  after its first handler run, and a copy of the spec in every list and watch event of the object after.
  In memory, an operator that starts again has no diff base: it sees every object as created and runs its
  change handler once more, which its handlers take as the resume they also are (level-triggered: the
  same document changes nothing). An object's entry is dropped by :meth:`MemoryDiffBase.forget` when it
  is deleted.
- Its progress (a handler's retries) in annotations, :class:`ProgressAnnotations`, as kopf's own storage
  does, but its ``kopf-managed`` marker written only with progress that stays on the object: kopf's writes
  it with every handler run that succeeds at once, a merge patch of every object for nothing.
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


class ProgressAnnotations(kopf.AnnotationsProgressStorage):
    """kopf's annotation progress storage, without the marker once every record is purged."""

    def purge(self, *, key: Any, body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        """Purge the record as kopf does; then, if no record of ours is left in the patch, the
        ``<prefix>/kopf-managed`` marker too (unless the object has it, it was only just added)."""
        super().purge(key=key, body=body, patch=patch, **kwargs)
        marker = f"{self.prefix}/kopf-managed"
        pending = patch.get("metadata", {}).get("annotations", {})
        ours = [k for k, v in pending.items() if k.startswith(f"{self.prefix}/") and k != marker and v]
        if marker in pending and not ours and marker not in body.metadata.annotations:
            del pending[marker]
            if not pending:  # an empty stanza left in the patch is still a request
                del patch["metadata"]["annotations"]
            if not patch["metadata"]:
                del patch["metadata"]
