"""The desired state of each worker, from the snapshot a plan leads to (what the scheduler writes).

Every replica of the snapshot except failed ones is listed with its role, its GPUs, its priority (a
prewarmed replica's current score; a serving one's model base score, for the record) and the KV
space it lends. A replica the plan evicted is simply absent: absence is the eviction order (see
:mod:`warmserve.protocol.state`). Every worker gets a document, an empty one if it holds nothing.
"""

from __future__ import annotations

from warmserve.operator.planning.prewarm_scores import ScoreConfig, prewarm_scores
from warmserve.operator.planning.snapshot import Replica, Snapshot
from warmserve.protocol.state import DesiredReplica, DesiredState, ModelSpec, ReplicaState


def desired_states(
    snapshot: Snapshot, generation: int, config: ScoreConfig | None = None
) -> dict[str, DesiredState]:
    """One :class:`DesiredState` per worker name, all at ``generation``."""
    scores = prewarm_scores(snapshot, config or ScoreConfig())
    listed: dict[str, list[DesiredReplica]] = {w.name: [] for w in snapshot.workers}
    specs: dict[str, dict[str, ModelSpec]] = {w.name: {} for w in snapshot.workers}
    for replica in snapshot.replicas:
        if replica.state is ReplicaState.FAILED:
            continue
        specs[replica.worker][replica.model] = snapshot.models[replica.model].spec
        listed[replica.worker].append(_desired(snapshot, replica, scores))
    return {
        name: DesiredState(
            worker=name, generation=generation, models=specs[name], replicas=tuple(listed[name])
        )
        for name in listed
    }


def _desired(snapshot: Snapshot, replica: Replica, scores: dict[str, float]) -> DesiredReplica:
    model = snapshot.models[replica.model]
    priority = scores.get(replica.id, model.priority * model.cold_start_s)
    return DesiredReplica(
        id=replica.id,
        model=replica.model,
        gpus=replica.gpus,
        role=replica.role,
        priority=priority,
        kv_lend_bytes=replica.kv_lent_bytes,
    )
