"""What the baselines without prewarming do first each step: drop whatever is not a live instance."""

from __future__ import annotations

from warmserve.operator.planning.occupancy import Occupancy
from warmserve.operator.planning.plan import Action, Evict
from warmserve.operator.planning.snapshot import Snapshot
from warmserve.protocol.state import ReplicaState


def evict_non_instances(snapshot: Snapshot, occ: Occupancy) -> list[Action]:
    """Evict failed replicas and any that is not an instance (these policies keep nothing prewarmed)."""
    actions: list[Action] = []
    for replica in snapshot.replicas:
        if replica.state is ReplicaState.FAILED or not replica.is_instance:
            occ.remove(replica.id)
            actions.append(Evict(replica.id, replica.model, "failed or not an instance: drop it"))
    return actions
