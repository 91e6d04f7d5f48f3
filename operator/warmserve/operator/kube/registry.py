"""The operator's view of its namespace's resources, and the one rule between them and the scheduler.

The rule: the scheduler's models are exactly the ``ModelDeployment`` resources that parse and that some
``WorkerPool`` can hold (:meth:`ModelDeployment.model_config`), keyed by the name served on the OpenAI API.
Every change of a resource goes through :class:`Registry`, which recomputes that set and hands it to
:meth:`Scheduler.set_models` only when it changed (a new model set makes the next tick build its snapshot
afresh). A resource that cannot be served is kept with its reason, naming the field, for its status.

No Kubernetes client here: resources arrive as the API server's JSON documents, from the kopf handlers.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from warmserve.operator.planning.plan import ColdStart, Plan
from warmserve.operator.planning.snapshot import ModelConfig, Snapshot
from warmserve.operator.ports import Cluster, Observation, Policy
from warmserve.operator.resources import (
    ModelDeployment,
    WorkerPool,
    parse_model_deployment,
    parse_worker_pool,
)
from warmserve.operator.scheduler import Scheduler
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.resource_names import API_VERSION
from warmserve.protocol.state import DesiredState

#: A resource by name within the operator's namespace.
Name = str


@dataclass(frozen=True, slots=True)
class Verdict:
    """What became of one ``ModelDeployment``: parsed (``deployment``, ``None`` if it did not parse) and
    served, or refused with ``error`` naming the field (empty when served)."""

    deployment: ModelDeployment | None
    error: str = ""

    @property
    def served(self) -> bool:
        return not self.error


@dataclass(frozen=True, slots=True)
class Served:
    """A served model's ``ModelDeployment`` and its uid."""

    deployment: ModelDeployment
    uid: str


@dataclass(frozen=True, slots=True)
class ColdStartRecord:
    """The last cold start the scheduler decided for a model: when (epoch seconds) and why."""

    time: float
    reason: str


class Registry:
    """The namespace's WorkerPools and ModelDeployments as parsed, and the scheduler they feed."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.pools: dict[Name, WorkerPool] = {}
        self._documents: dict[Name, Mapping[str, Any]] = {}  # ModelDeployment name -> its last document
        # ModelDeployment name -> its document parsed, or the parser's refusal: parsed once per change,
        # not once per refresh (a refresh over n resources at each of n changes would parse n² times).
        self._parsed: dict[Name, ModelDeployment | InvalidFieldError] = {}
        self.verdicts: dict[Name, Verdict] = {}

    def put_pool(self, obj: Mapping[str, Any]) -> WorkerPool:
        """Parse a WorkerPool and take it into account; raises :class:`InvalidFieldError` (and forgets
        the pool) when it does not parse."""
        name = str(obj["metadata"]["name"])
        try:
            pool = parse_worker_pool(obj)
        except InvalidFieldError:
            self.drop_pool(name)
            raise
        if self.pools.get(name) != pool:
            self.pools[name] = pool
            self._refresh()
        return pool

    def drop_pool(self, name: Name) -> None:
        if self.pools.pop(name, None) is not None:
            self._refresh()

    def put_deployment(self, obj: Mapping[str, Any]) -> Verdict:
        """Take a ModelDeployment (new or changed) into account; its verdict."""
        name = str(obj["metadata"]["name"])
        essence = _essence(obj)
        if self._documents.get(name) != essence:
            self._documents[name] = essence
            self._parsed[name] = _parsed(essence)
            self._refresh()
        return self.verdicts[name]

    def drop_deployment(self, name: Name) -> None:
        """Forget a deleted ModelDeployment: the scheduler stops serving it from the next tick."""
        if self._documents.pop(name, None) is not None:
            del self._parsed[name]
            self._refresh()

    def verdict(self, name: Name) -> Verdict | None:
        return self.verdicts.get(name)

    def served(self) -> dict[str, Served]:
        """Every served model by served name: its deployment and the resource's uid (what owns the objects
        kept for it, such as its forecast history)."""
        return {
            v.deployment.spec.name: Served(
                v.deployment, str(self._documents[name]["metadata"].get("uid", ""))
            )
            for name, v in self.verdicts.items()
            if v.served and v.deployment is not None
        }

    def reference(self, served: str) -> dict[str, str] | None:
        """The object reference (as an Event's ``regarding``) of the ModelDeployment serving ``served``;
        ``None`` when none does (it was deleted, or refused)."""
        entry = self.served().get(served)
        if entry is None:
            return None
        deployment = entry.deployment
        return {
            "apiVersion": API_VERSION,
            "kind": "ModelDeployment",
            "name": deployment.name,
            "namespace": deployment.namespace,
            "uid": entry.uid,
        }

    def _refresh(self) -> None:
        """Recompute every verdict and the scheduler's models (the one rule of the module docstring)."""
        verdicts: dict[Name, Verdict] = {}
        configs: dict[str, ModelConfig] = {}
        owners: dict[str, Name] = {}
        pools = [self.pools[n] for n in sorted(self.pools)]
        for name in sorted(self._parsed):  # the same order every time: a served name's owner is stable
            deployment = self._parsed[name]
            if isinstance(deployment, InvalidFieldError):
                verdicts[name] = Verdict(None, str(deployment))
                continue
            served = deployment.spec.name
            try:
                if served in owners:
                    raise InvalidFieldError(
                        "spec.model.servedName",
                        f"a name no other ModelDeployment serves (ModelDeployment {owners[served]} does)",
                        served,
                    )
                config = deployment.model_config(pools)
            except InvalidFieldError as exc:
                verdicts[name] = Verdict(deployment, str(exc))
                continue
            owners[served] = name
            configs[served] = config
            verdicts[name] = Verdict(deployment)
        self.verdicts = verdicts
        if configs != dict(self.scheduler.models):
            self.scheduler.set_models(configs)


def _parsed(essence: Mapping[str, Any]) -> ModelDeployment | InvalidFieldError:
    """The resource parsed, or why the parser refused it (kept for its verdict)."""
    try:
        return parse_model_deployment(essence)
    except InvalidFieldError as exc:
        return exc


def _essence(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What parsing reads of a resource: its status and resource version change at every status write and
    must not make every ModelDeployment parse again."""
    metadata = obj["metadata"]
    kept = {k: metadata[k] for k in ("name", "namespace", "generation", "uid") if k in metadata}
    return {"metadata": kept, "spec": copy.deepcopy(obj.get("spec"))}


class ColdStarts:
    """The last cold start the scheduler decided for each model (by served name), for status."""

    def __init__(self) -> None:
        self.last: dict[str, ColdStartRecord] = {}

    def recording(self, step: Policy) -> Policy:
        """``step``, remembering each cold start it decides."""

        def recorded(snapshot: Snapshot, state: Any) -> tuple[Plan, Any]:
            plan, next_state = step(snapshot, state)
            for action in plan:
                if isinstance(action, ColdStart):
                    self.last[action.model] = ColdStartRecord(snapshot.now, action.reason)
            return plan, next_state

        return recorded


class Recorded:
    """A :class:`Cluster` that keeps its last observation: what the workers report, including replicas of
    models the scheduler no longer serves (which its snapshot leaves out), for a deletion to wait on."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.last: Observation | None = None

    async def observe(self) -> Observation:
        self.last = await self.cluster.observe()
        return self.last

    async def apply(self, desired: Mapping[str, DesiredState]) -> set[str]:
        return await self.cluster.apply(desired)

    def replicas_of(self, model: str) -> int | None:
        """How many replicas of ``model`` the workers reported last (``None`` before any observation)."""
        if self.last is None:
            return None
        return sum(1 for w in self.last.workers.values() for r in w.replicas if r.model == model)
