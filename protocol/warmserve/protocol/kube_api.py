"""How every WarmServe component that runs in a Pod reaches the Kubernetes API server.

One rule for the worker (its own Pod's annotations) and the operator (``KubeCluster``): which
configuration a client is built from (:func:`kube_api_client`), which errors mean "the API server is
unreachable or refused, try again" (:data:`KUBE_ERRORS`), how such an error is told in one line
(:func:`brief`) and how long to wait before trying again (:class:`Backoff`). The only module of
``warmserve.protocol`` that imports the ``kubernetes`` client; the rest stays pure
(docs/architecture.md).
"""

from __future__ import annotations

import os

import kubernetes.client
import kubernetes.config
import urllib3.exceptions

from warmserve.protocol.errors import InvalidInputError

# Errors that mean "the API server is unreachable or refused": retry, never crash.
KUBE_ERRORS: tuple[type[Exception], ...] = (
    kubernetes.client.ApiException,
    urllib3.exceptions.HTTPError,
    OSError,
)


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


def brief(exc: Exception) -> str:
    """One line for one of :data:`KUBE_ERRORS`: the HTTP status and reason of an API error, else the
    exception's type and message (an API error's own text carries every response header)."""
    if isinstance(exc, kubernetes.client.ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
