"""The Kubernetes client helpers a worker's state channels share: its own Pod, an API client, and how to
retry when the API server is unreachable.

The desired-state source (:mod:`.desired_source`) watches the Pod's annotation and the observed-state
sink (:mod:`.observed_sink`) patches it; both retry :data:`KUBE_ERRORS` with a :class:`Backoff`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import kubernetes.client
import kubernetes.config
import urllib3.exceptions

from warmserve.protocol.errors import InvalidFieldError, InvalidInputError


@dataclass(frozen=True, slots=True)
class PodRef:
    """The worker's own Pod, which carries its desired state and receives its observed state."""

    namespace: str
    name: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PodRef:
        """Read ``POD_NAMESPACE`` and ``POD_NAME`` (set by the downward API); raise naming the missing one."""
        env = os.environ if env is None else env
        for var in ("POD_NAMESPACE", "POD_NAME"):
            if not env.get(var):
                raise InvalidFieldError(
                    var, "the worker Pod's namespace and name (downward API)", env.get(var)
                )
        return cls(namespace=env["POD_NAMESPACE"], name=env["POD_NAME"])

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def kube_api_client(host: str | None = None) -> kubernetes.client.ApiClient:
    """A client for the API server: ``host`` if given (tests, a proxy), else the kubeconfig ``KUBECONFIG``
    names, else in-cluster, else the default kubeconfig.

    An explicit host wins so that a developer's kubeconfig never redirects a test. ``KUBECONFIG`` wins over
    in-cluster config because the test cluster's node agent gives each Pod process its ServiceAccount token
    that way (processes sharing one filesystem cannot each have the in-cluster token path;
    docs/test-cluster.md). Raises :class:`InvalidInputError` when no configuration is found.
    """
    if host:
        return kubernetes.client.ApiClient(kubernetes.client.Configuration(host=host))
    config = kubernetes.client.Configuration()
    named = os.environ.get("KUBECONFIG")  # read now: the client reads it once, at its import
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not named:
            kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
        else:
            kubernetes.config.load_kube_config(config_file=named, client_configuration=config)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException as exc:
        raise InvalidInputError(
            f"no Kubernetes API configuration (in-cluster or kubeconfig): {exc}"
        ) from None
    return kubernetes.client.ApiClient(config)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Pause before retry ``n`` (0: after a success): ``initial * factor**n``, at most ``maximum`` s."""

    initial: float = 0.2
    factor: float = 2.0
    maximum: float = 10.0

    def delay(self, failures: int) -> float:
        return min(self.maximum, self.initial * self.factor**failures)


DEFAULT_BACKOFF = Backoff()

# Errors that mean "the API server is unreachable or refused": retry, never crash the worker.
KUBE_ERRORS: tuple[type[Exception], ...] = (
    kubernetes.client.ApiException,
    urllib3.exceptions.HTTPError,
    OSError,
)
