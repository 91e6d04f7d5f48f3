"""The kopf handlers: a thin adapter from resource events to the :class:`Registry`, the worker Pods and the
status subresource (docs/operator.md).

- ``WorkerPool`` created, changed or found at start-up (resume), and every ``interval_s`` (a timer, so a
  deleted Pod comes back and the status follows the Pods): parsed, the pool's ServiceAccount, Role and
  RoleBinding ``warmserve-worker-<pool>`` ensured, the Role naming exactly the pool's Pods, those wanted
  and those it still owns (by a change always; by the timer when those names changed, since it may run
  before the change handler and a Pod whose ServiceAccount is missing is refused), Pods ``<pool>-<i>``
  for ``i < spec.pods`` created and the others deleted, status written. So a new Pod is named in the
  Role before it exists, and a Pod scaled away keeps its access until it is gone. Deleted: forgotten
  (its Pods and RBAC go with it, by their owner references).
- ``ModelDeployment`` created, changed or resumed: handed to the registry (which sets the scheduler's
  models). After each tick, :meth:`Handlers.write_statuses` writes the statuses the new snapshot changed,
  a new object's first, from the scheduler's last snapshot (no timer per ModelDeployment: 200 of them
  every 2 s cost the API server a status write each whenever anything moved, and Ready came up to an
  interval late). Deleted: forgotten at once (the scheduler drops its replicas at the next tick), and the
  finalizer waits until no worker still reports one of its replicas, at most :data:`RELEASE_TIMEOUT_S`.

At start, before the scheduler's first tick, :meth:`Handlers.prime` puts every existing resource into the
registry and continues above the generations already written to the worker Pods (docs/operator.md).

Errors: a spec the parser refuses writes ``Degraded`` naming the field, posts a Warning Event
(reason ``InvalidSpec``) and raises
:class:`kopf.PermanentError` (no retry until the object changes); :class:`UnavailableError` (the API server
away) becomes :class:`kopf.TemporaryError`, retried; :class:`InvalidInputError`, permanent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import kopf
import kubernetes.client

from warmserve.operator.kube import status
from warmserve.operator.kube.metrics import OperatorMetrics
from warmserve.operator.kube.persistence import MemoryDiffBase
from warmserve.operator.kube.registry import ColdStarts, Recorded, Registry
from warmserve.operator.resources import WorkerPool, parse_model_deployment, worker_selector
from warmserve.protocol.errors import InvalidFieldError, InvalidInputError, UnavailableError
from warmserve.protocol.kube_api import KUBE_ERRORS, brief
from warmserve.protocol.resource_names import GROUP, MODEL_DEPLOYMENTS, VERSION, WORKER_POOLS
from warmserve.protocol.state import DESIRED_ANNOTATION, DesiredState

log = logging.getLogger(__name__)

#: Seconds a deleted ModelDeployment waits for its replicas to be released before it lets go.
RELEASE_TIMEOUT_S = 60.0
#: Worker Pods of a pool created at once (no more than the client's connection pool keeps: 5 per CPU).
CREATE_THREADS = 8
#: Seconds each list at start may take before the operator gives up (exit 75, try again).
START_TIMEOUT_S = 10.0

P = ParamSpec("P")
T = TypeVar("T")


class Handlers:
    """The handlers of one operator, registered on their own :class:`kopf.OperatorRegistry`."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        registry: Registry,
        cold_starts: ColdStarts,
        cluster: Recorded,
        version: str,
        interval_s: float,
        metrics: OperatorMetrics,
    ) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        self.registry = registry
        self.cold_starts = cold_starts
        self.cluster = cluster
        self.version = version
        self.metrics = metrics
        self._rbac_ensured: dict[tuple[str, str], frozenset[str]] = {}  # (namespace, pool) -> Pods named
        self._statuses: dict[str, _Written] = {}  # ModelDeployment name -> its status as last seen or written
        self.diffbase = MemoryDiffBase()  # kopf's last-handled state (operator.settings)
        self.kopf = kopf.OperatorRegistry()
        self._register(interval_s)

    def _register(self, interval_s: float) -> None:
        on, reg = kopf.on, self.kopf
        for kind, name, changed in (
            (WORKER_POOLS, "WorkerPool", self.pool_changed),
            (MODEL_DEPLOYMENTS, "ModelDeployment", self.model_changed),
        ):
            for event in (on.resume, on.create, on.update):
                event(GROUP, VERSION, kind, registry=reg, id="reconcile")(self.metrics.counted(name, changed))
        # A ModelDeployment's status follows the ticks (write_statuses), not a timer of its own. The pool's
        # timer runs first one interval after the pool appears: the change handler writes the status then.
        kopf.timer(
            GROUP,
            VERSION,
            WORKER_POOLS,
            registry=reg,
            interval=interval_s,
            initial_delay=interval_s,
            id="status",
        )(self.metrics.counted("WorkerPool", self.pool_timer))
        on.delete(GROUP, VERSION, WORKER_POOLS, registry=reg, optional=True, id="forget")(self.pool_deleted)
        on.delete(GROUP, VERSION, MODEL_DEPLOYMENTS, registry=reg, id="release")(self.model_deleted)

    def prime(self, namespace: str) -> None:
        """Put every WorkerPool and ModelDeployment of ``namespace`` into the registry, before the
        scheduler's first tick: a scheduler that ticked with no models would order every worker to release
        what it serves (a restarted operator must go on where it stopped). Objects being deleted are left
        to their delete handler. Raises :class:`UnavailableError` when they cannot be listed.
        Synchronous: it runs before the event loop has other work."""
        custom = kubernetes.client.CustomObjectsApi(self.core.api_client)
        listed: dict[str, list[dict[str, Any]]] = {}
        try:
            for kind in (WORKER_POOLS, MODEL_DEPLOYMENTS):
                answer: Any = custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, kind, _request_timeout=START_TIMEOUT_S
                )
                listed[kind] = answer["items"]
        except KUBE_ERRORS as exc:
            raise UnavailableError(
                f"cannot list {WORKER_POOLS} and {MODEL_DEPLOYMENTS} in namespace {namespace}: {brief(exc)}"
            ) from exc
        for obj in listed[WORKER_POOLS]:
            if not obj["metadata"].get("deletionTimestamp"):
                with contextlib.suppress(InvalidFieldError):  # its handler writes Degraded
                    self.registry.put_pool(obj)
        for obj in listed[MODEL_DEPLOYMENTS]:
            if not obj["metadata"].get("deletionTimestamp"):
                self.registry.put_deployment(obj)
        self._continue_generations(namespace)

    def _continue_generations(self, namespace: str) -> None:
        """Continue above the highest generation a previous operator wrote to a worker Pod. A worker
        reports the generation it *applied*, which may lag the one it accepted; a restarted scheduler
        counting from the reports alone could write a generation the worker already accepted, and the
        worker ignores an equal generation as a repeat."""
        try:
            answer: Any = self.core.list_namespaced_pod(
                namespace,
                label_selector=worker_selector(()),
                _preload_content=False,
                _request_timeout=START_TIMEOUT_S,
            )
            pods = json.loads(answer.data)["items"]
        except KUBE_ERRORS as exc:
            raise UnavailableError(
                f"cannot list the worker Pods in namespace {namespace}: {brief(exc)}"
            ) from exc
        written = [-1]
        for pod in pods:
            text = (pod["metadata"].get("annotations") or {}).get(DESIRED_ANNOTATION)
            with contextlib.suppress(InvalidFieldError):  # a malformed one is overwritten at the next tick
                written.append(DesiredState.from_json(text).generation if text else -1)
        scheduler = self.registry.scheduler
        scheduler.generation = max(scheduler.generation, *written)

    # --- WorkerPool ---------------------------------------------------------------------------------

    async def pool_changed(self, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await self._pool(body, patch, permanent=True)

    async def pool_timer(self, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await self._pool(body, patch, permanent=False)

    async def pool_deleted(self, name: str, namespace: str | None, uid: str, **_: Any) -> None:
        self.diffbase.forget(uid)
        self.registry.drop_pool(name)
        self._rbac_ensured.pop((str(namespace), name), None)

    async def _pool(self, body: kopf.Body, patch: kopf.Patch, *, permanent: bool) -> None:
        """Reconcile one pool. The workers' RBAC is ensured before any Pod is created, naming the Pods
        wanted and those the pool still owns: from a change (``permanent``) always, from the timer when
        those names differ from the last ensured (a timer running first would otherwise see its Pods
        refused, 403; a Pod scaled away and now gone leaves the Role). From a change, a spec that does not
        parse raises PermanentError after its Degraded status is written (the timer only writes it)."""
        try:
            pool: WorkerPool | None = self.registry.put_pool(body)
            error = ""
        except InvalidFieldError as exc:
            pool, error = None, str(exc)
        generation = int(body["metadata"].get("generation", 0))
        pods = await _adapted(self._list_pods, body["metadata"]["namespace"], str(body["metadata"]["name"]))
        if pool is not None:
            key = (pool.namespace, pool.name)
            names = frozenset(pool.pod_name(i) for i in range(pool.pods)) | {
                p["metadata"]["name"] for p in pods if pool.owns(p)
            }
            if permanent or self._rbac_ensured.get(key) != names:
                await _adapted(self._ensure_rbac, pool, names)
                self._rbac_ensured[key] = names
            if await _adapted(self._ensure_pods, pool, pods):
                pods = await _adapted(self._list_pods, pool.namespace, pool.name)
        _write_status(
            body,
            patch,
            status.pool_status(pool, error, generation, pods, time.time(), body.get("status") or {}),
        )
        if error and permanent:
            kopf.warn(body, reason="InvalidSpec", message=error)
            raise kopf.PermanentError(error)

    def _ensure_rbac(self, pool: WorkerPool, pods: frozenset[str]) -> None:
        """The pool's ServiceAccount, its Role on the Pods named ``pods`` and the RoleBinding between
        them, created when missing; the Role's rules are patched when it exists already."""
        account, role, binding = pool.worker_rbac(pods)
        _create(self.core.create_namespaced_service_account, pool.namespace, account)
        if not _create(self.rbac.create_namespaced_role, pool.namespace, role):
            self.rbac.patch_namespaced_role(pool.service_account, pool.namespace, {"rules": role["rules"]})
        _create(self.rbac.create_namespaced_role_binding, pool.namespace, binding)

    def _ensure_pods(self, pool: WorkerPool, pods: list[dict[str, Any]]) -> bool:
        """Create the pool's missing worker Pods, delete those beyond ``spec.pods``; whether any changed.
        A Pod being deleted counts as present; it is created again once it is gone (by the timer)."""
        present = {p["metadata"]["name"] for p in pods}
        leaving = {p["metadata"]["name"] for p in pods if p["metadata"].get("deletionTimestamp")}
        wanted = {pool.pod_name(i): i for i in range(pool.pods)}
        missing = sorted(wanted.keys() - present)
        manifests = [pool.worker_pod(wanted[name], self.version) for name in missing]
        # Created at once, not one after the other: each create is a round trip, and on a loaded API server
        # the first 25 of a pool's 32 Pods created in turn took 14 s.
        with ThreadPoolExecutor(CREATE_THREADS) as creating:
            created = list(
                creating.map(
                    lambda body: _create(self.core.create_namespaced_pod, pool.namespace, body), manifests
                )
            )
        for name, new in zip(missing, created, strict=True):
            if new:
                log.info("created worker Pod %s/%s", pool.namespace, name)
        changed = any(created)
        for name in sorted(present - wanted.keys() - leaving):
            log.info("deleting worker Pod %s/%s (beyond spec.pods %d)", pool.namespace, name, pool.pods)
            try:
                self.core.delete_namespaced_pod(name, pool.namespace)
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    raise
            changed = True
        return changed

    def _list_pods(self, namespace: str, pool: str) -> list[dict[str, Any]]:
        selector = worker_selector((pool,))
        response: Any = self.core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False
        )
        pods: list[dict[str, Any]] = json.loads(response.data)["items"]
        return pods

    # --- ModelDeployment ----------------------------------------------------------------------------

    async def model_changed(self, body: kopf.Body, **_: Any) -> None:
        """Put the ModelDeployment into the registry; its status is written after the next tick
        (:meth:`write_statuses`), with what that tick decided for it (written here too, it cost a status
        write per object that the tick's own made moot within a second)."""
        verdict = self.registry.put_deployment(body)
        self._remember(body)
        if not verdict.served:
            kopf.warn(body, reason="InvalidSpec", message=verdict.error)
            raise kopf.PermanentError(verdict.error)

    async def model_deleted(self, body: kopf.Body, name: str, uid: str, **_: Any) -> None:
        """Forget the model, then hold the finalizer while the scheduler still sees one of its replicas
        (called again until then: the retry finds the model forgotten and only counts)."""
        self.registry.drop_deployment(name)
        self.diffbase.forget(uid)
        self._statuses.pop(name, None)
        try:
            served = parse_model_deployment(body).spec.name
        except InvalidFieldError:
            return  # never parsed, never served
        left = self.cluster.replicas_of(served)
        if left is None:
            return  # nothing observed yet, so nothing placed by this operator
        waited = time.time() - _epoch(body["metadata"].get("deletionTimestamp"))
        if left and waited < RELEASE_TIMEOUT_S:
            raise kopf.TemporaryError(f"{left} replicas of {served} not released yet", delay=1)
        if left:
            log.warning(
                "ModelDeployment %s deleted, %d replicas of %s not released after %.0f s: letting go",
                name,
                left,
                served,
                waited,
            )

    def _remember(self, body: kopf.Body) -> None:
        """Start following the status of a ModelDeployment new to this operator, or of a new generation,
        from the status it carries. For a generation already followed, what this operator last wrote is
        kept: only this operator writes the status, and on a loaded API server kopf may hand a body older
        than the last write (compared with that, keys and each condition's transition time looked
        changed, and were written again)."""
        name = str(body["metadata"]["name"])
        generation = int(body["metadata"].get("generation", 0))
        last = self._statuses.get(name)
        if last is None or last.generation != generation:
            namespace = str(body["metadata"]["namespace"])
            self._statuses[name] = _Written(namespace, generation, dict(body.get("status") or {}))

    def _new_model_status(self, name: str, generation: int, previous: status.Status) -> status.Status | None:
        """The ModelDeployment's status now, from the registry and the scheduler's last snapshot; None if
        the registry does not know it."""
        verdict = self.registry.verdict(name)
        if verdict is None:
            return None
        served = verdict.deployment.spec.name if verdict.deployment is not None else None
        cold = self.cold_starts.last.get(served) if served is not None else None
        snapshot = self.registry.scheduler.snapshot
        return status.model_status(verdict, generation, snapshot, cold, time.time(), previous)

    async def write_statuses(self) -> int:
        """Write at once the status of every ModelDeployment whose status differs from what this operator
        last wrote (or, for one new to it, from the status it carries): called after each tick, so a new
        object's status, and ``Ready`` when a replica starts serving, follow within a tick. Returns the
        number written. Only the keys that changed are sent. A write that fails is logged and made again
        after the next tick."""
        written = 0
        for name in list(self._statuses):
            last = self._statuses.get(name)  # read now: a handler may have written it meanwhile
            new = self._new_model_status(name, last.generation, last.status) if last is not None else None
            if last is None or new is None or not (changed := status.changed(last.status, new)):
                continue
            try:
                await asyncio.to_thread(self._patch_model_status, last.namespace, name, changed)
            except KUBE_ERRORS as exc:
                log.warning(
                    "status of ModelDeployment %s/%s not written: %s", last.namespace, name, brief(exc)
                )
                continue  # remembered as before: written again after the next tick
            now = self._statuses.get(name)
            if now is not None and now.generation == last.generation:  # not deleted nor changed meanwhile
                self._statuses[name] = replace(now, status=now.status | changed)
            written += 1
        return written

    def _patch_model_status(self, namespace: str, name: str, changed: status.Status) -> None:
        kubernetes.client.CustomObjectsApi(self.core.api_client).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, MODEL_DEPLOYMENTS, name, {"status": changed}
        )


@dataclass(frozen=True, slots=True)
class _Written:
    """A ModelDeployment's status as the operator last saw or wrote it, for the generation it describes."""

    namespace: str
    generation: int
    status: status.Status


def _write_status(body: kopf.Body, patch: kopf.Patch, new: status.Status) -> None:
    """Patch the status only where it changed: a timer writing the same status every interval would
    cost the API server a write per resource and interval."""
    for key, value in status.changed(body.get("status") or {}, new).items():
        patch.status[key] = value


def _create(create: Callable[..., Any], namespace: str, body: Mapping[str, Any]) -> bool:
    """Create an object; False if it exists already (409)."""
    try:
        create(namespace, body)
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise
        return False
    return True


async def _adapted(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a synchronous client call in a worker thread, its failures as kopf sees them: the API server
    away or refusing for now is temporary (retried), a refusal of what we sent is permanent."""
    try:
        return await asyncio.to_thread(call, *args, **kwargs)
    except UnavailableError as exc:
        raise kopf.TemporaryError(str(exc), delay=2) from exc
    except InvalidInputError as exc:
        raise kopf.PermanentError(str(exc)) from exc
    except kubernetes.client.ApiException as exc:
        if exc.status in (400, 403, 422):
            raise kopf.PermanentError(brief(exc)) from exc
        raise kopf.TemporaryError(brief(exc), delay=2) from exc
    except KUBE_ERRORS as exc:
        raise kopf.TemporaryError(brief(exc), delay=2) from exc


def _epoch(text: str | None) -> float:
    """Epoch seconds of a Kubernetes timestamp (now if there is none)."""
    if not text:
        return time.time()
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
