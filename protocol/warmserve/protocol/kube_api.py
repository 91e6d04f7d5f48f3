"""How the operator and the gateway reach the Kubernetes API server with the ``kubernetes`` client.

The rules every client shares are :mod:`warmserve.protocol.kube_http`'s (which configuration, what an error
means, how it is told); this module applies them to the ``kubernetes`` client: a client built from the
configuration :func:`~warmserve.protocol.kube_http.config_source` picks (:func:`kube_api_client`), the
client's errors among those that mean "unreachable or refused, try again" (:data:`KUBE_ERRORS`, told by
:func:`brief`), and the listers a :class:`~warmserve.protocol.list_watch.ListWatch` follows objects with
(:func:`pod_lister`, :func:`custom_lister`). The only module of ``warmserve.protocol`` that imports the
``kubernetes`` client; the rest stays pure (docs/architecture.md). The worker does not use it
(docs/worker-protocol.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import kubernetes.client
import kubernetes.config

from warmserve.protocol import kube_http
from warmserve.protocol.errors import InvalidInputError
from warmserve.protocol.kube_http import (
    HTTP_ERRORS,
    NO_CONFIG,
    ApiError,
    Host,
    InCluster,
    Kubeconfig,
    Query,
    Timeout,
)

# Errors that mean "the API server is unreachable or refused": retry, never crash.
KUBE_ERRORS: tuple[type[Exception], ...] = (kubernetes.client.ApiException, *HTTP_ERRORS)

#: Lists or watches one namespace's objects (see :class:`~warmserve.protocol.list_watch.ListWatch`).
Lister = Callable[[str, Query, Timeout], Any]


def kube_api_client(host: str | None = None) -> kubernetes.client.ApiClient:
    """A client for the API server, from the configuration :func:`~warmserve.protocol.kube_http.config_source`
    picks (``host`` first). Raises :class:`InvalidInputError` when no configuration is found."""
    config = kubernetes.client.Configuration()
    try:
        match kube_http.config_source(host, os.environ):
            case Host(url):
                return kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
            case InCluster():
                kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
            case Kubeconfig(path):  # KUBECONFIG read now: the client reads it once, at its import
                kubernetes.config.load_kube_config(config_file=path, client_configuration=config)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException as exc:
        raise InvalidInputError(f"{NO_CONFIG}: {exc}") from None
    return kubernetes.client.ApiClient(config)


def brief(exc: Exception) -> str:
    """One line for one of :data:`KUBE_ERRORS` (the client's API error: only its status and reason, as its
    own text carries every response header)."""
    if isinstance(exc, kubernetes.client.ApiException):
        return kube_http.status_line(exc.status, exc.reason)
    return kube_http.brief(exc)


def pod_lister(api: kubernetes.client.ApiClient) -> Lister:
    """The lister of Pods."""
    return _lister(kubernetes.client.CoreV1Api(api).list_namespaced_pod)


def custom_lister(api: kubernetes.client.ApiClient, group: str, version: str, plural: str) -> Lister:
    """The lister of one custom resource (``group``/``version``, its ``plural``)."""
    custom = kubernetes.client.CustomObjectsApi(api)

    def call(namespace: str, **options: Any) -> Any:
        return custom.list_namespaced_custom_object(group, version, namespace, plural, **options)

    return _lister(call)


def _lister(call: Callable[..., Any]) -> Lister:
    """A :data:`Lister` over one of the client's ``list_namespaced_*`` calls: the query's API names as the
    call's keywords, the response unread, the client's API error as :class:`ApiError`."""

    def lister(namespace: str, query: Query, timeout: Timeout) -> Any:
        options = {_SNAKE.sub(r"_\1", name).lower(): value for name, value in query.items()}
        try:
            return call(namespace, **options, _request_timeout=timeout, _preload_content=False)
        except kubernetes.client.ApiException as exc:
            raise ApiError(exc.status or 0, exc.reason or "") from exc

    return lister


_SNAKE = re.compile(r"([A-Z])")
