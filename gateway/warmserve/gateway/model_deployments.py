"""The gateway's models in a cluster: the ModelDeployments of its namespace that the operator serves.

With discovery on (``--discover-namespace``), the declared models are not a list of options but the
namespace's ``ModelDeployment`` resources, followed by a :class:`~warmserve.protocol.list_watch.ListWatch`
(list, then watch), so a model applied with ``kubectl`` is served without touching the gateway. A
ModelDeployment counts once the operator has parsed it (its ``status.servedName`` names the model on the
OpenAI API) and while it is not ``Degraded`` (a refused spec, no pool that can hold it, a served name
another one holds): its requests are held until an instance appears, as for any declared model, with B =
``spec.serving.maxConcurrency`` (the CRD's default 8). One that does not count is answered ``404`` like
any unknown model. While the API server is unreachable the last set is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import kubernetes.client

from warmserve.gateway.config import DEFAULT_MAX_CONCURRENCY, DeclaredModel
from warmserve.protocol.kube_api import custom_lister
from warmserve.protocol.list_watch import ListWatch
from warmserve.protocol.resource_names import GROUP, MODEL_DEPLOYMENTS, VERSION

log = logging.getLogger(__name__)

#: Seconds one list of the API server may take before it counts as failed (then retried).
REQUEST_TIMEOUT_S = 5.0


def declared_models(deployments: Iterable[Mapping[str, Any]]) -> tuple[DeclaredModel, ...]:
    """The models the ModelDeployments declare, by name (see the module docstring for which count)."""
    found: dict[str, DeclaredModel] = {}
    for obj in deployments:
        status = obj.get("status") or {}
        name = status.get("servedName")
        degraded = any(
            c.get("type") == "Degraded" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        if not isinstance(name, str) or not name or degraded or name in found:
            continue
        cap = ((obj.get("spec") or {}).get("serving") or {}).get("maxConcurrency", DEFAULT_MAX_CONCURRENCY)
        found[name] = DeclaredModel(
            name, cap if isinstance(cap, int) and cap >= 1 else DEFAULT_MAX_CONCURRENCY
        )
    return tuple(found[name] for name in sorted(found))


def follow_model_deployments(
    api: kubernetes.client.ApiClient,
    namespace: str,
    set_models: Callable[[Sequence[DeclaredModel]], None],
) -> ListWatch:
    """A watch of ``namespace``'s ModelDeployments that calls ``set_models`` with the models they declare
    whenever those change; run it with ``async with`` (``set_models`` runs on that event loop)."""
    last: tuple[DeclaredModel, ...] | None = None

    def changed(deployments: Sequence[Mapping[str, Any]]) -> None:
        nonlocal last
        models = declared_models(deployments)
        if models != last:
            last = models
            log.info("models of namespace %s: %s", namespace, [m.name for m in models] or "none")
            set_models(models)

    lister = custom_lister(api, GROUP, VERSION, MODEL_DEPLOYMENTS)
    return ListWatch(
        lister, namespace, "", on_change=changed, request_timeout_s=REQUEST_TIMEOUT_S, kind="ModelDeployments"
    )
