"""The Kubernetes API over plain HTTP (urllib3), for a process that must not pay for the ``kubernetes``
client.

A worker only follows its own Pod and patches one annotation of it; the ``kubernetes`` client for that (its
import, its configuration, its client objects) cost about 0.7 s of CPU at every worker start, two thirds of
it, where many worker Pods start at once (docs/worker-protocol.md). :class:`KubeHttp` speaks the few
requests the worker needs (:meth:`KubeHttp.request`, and :meth:`KubeHttp.pod_lister` for
:class:`~warmserve.protocol.list_watch.ListWatch`) with urllib3, the HTTP library under the ``kubernetes``
client.

Also the rules every client of the API server shares, whichever library it uses (:mod:`.kube_api` adds the
``kubernetes`` client's): where the configuration comes from (:func:`config_source`), what an answer other
than 2xx raises (:class:`ApiError`), which errors mean "unreachable or refused: try again"
(:data:`HTTP_ERRORS`) and how one is told in a line (:func:`brief`).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode

import urllib3
import urllib3.exceptions
import yaml

from warmserve.protocol.errors import InvalidFieldError, InvalidInputError

#: Where Kubernetes mounts a Pod's ServiceAccount token and the cluster's CA.
IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = "~/.kube/config"
#: What a missing configuration is called, by this client and the ``kubernetes`` one alike.
NO_CONFIG = "no Kubernetes API configuration (in-cluster or kubeconfig)"

#: Seconds, or a (connect, read) pair.
Timeout = float | tuple[float, float]
#: Query parameters of a list or watch, by their API names (``labelSelector``, ``watch``, ...).
Query = Mapping[str, str | int | bool | None]


class ApiError(Exception):
    """The API server answered with a status other than 2xx (``status``; ``reason`` its HTTP reason)."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(
            f"{status_line(status, reason)}: {message}" if message else status_line(status, reason)
        )
        self.status = status
        self.reason = reason


# Errors that mean "the API server is unreachable or refused": retry, never crash.
HTTP_ERRORS: tuple[type[Exception], ...] = (ApiError, urllib3.exceptions.HTTPError, OSError)


def status_line(status: int | None, reason: str | None) -> str:
    return f"HTTP {status} {reason}"


def brief(exc: Exception) -> str:
    """One line for one of :data:`HTTP_ERRORS`: an API error's status and reason, else the exception's type
    and message."""
    if isinstance(exc, ApiError):
        return status_line(exc.status, exc.reason)
    return f"{type(exc).__name__}: {exc}"


# --- where the configuration comes from ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Host:
    url: str


@dataclass(frozen=True, slots=True)
class Kubeconfig:
    path: str | None  # None: the default kubeconfig


@dataclass(frozen=True, slots=True)
class InCluster:
    pass


def config_source(host: str | None, environ: Mapping[str, str]) -> Host | Kubeconfig | InCluster:
    """Which configuration a client is built from: ``host`` if given (tests, a proxy), else the kubeconfig
    ``KUBECONFIG`` names, else in-cluster when ``KUBERNETES_SERVICE_HOST`` is set, else the default
    kubeconfig.

    An explicit host wins so that a developer's kubeconfig never redirects a test. ``KUBECONFIG`` wins over
    in-cluster config because the test cluster's node agent gives each Pod process its ServiceAccount token
    that way (processes sharing one filesystem cannot each have the in-cluster token path;
    docs/test-cluster.md).
    """
    if host:
        return Host(host)
    named = environ.get("KUBECONFIG")
    if environ.get("KUBERNETES_SERVICE_HOST") and not named:
        return InCluster()
    return Kubeconfig(named or None)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the API server is and how to prove who we are. ``token_file`` is read at each request, so a
    rotated token (a Pod's projected ServiceAccount token) is picked up."""

    server: str
    ca_file: str | None = None
    ca_data: str | None = None  # PEM
    insecure: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_file: str | None = None


def load_endpoint(host: str | None = None, environ: Mapping[str, str] | None = None) -> Endpoint:
    """The :class:`Endpoint` :func:`config_source` picks. Raises :class:`InvalidInputError` when there is
    none, or the kubeconfig asks for what this client does not do (exec plugins, auth providers, passwords,
    client credentials given inline)."""
    env = os.environ if environ is None else environ
    match config_source(host, env):
        case Host(url):
            return Endpoint(server=url)
        case InCluster():
            return _in_cluster(env)
        case Kubeconfig(path):
            return _from_kubeconfig(Path(os.path.expanduser(path or DEFAULT_KUBECONFIG)))
    raise AssertionError("unreachable")


def _in_cluster(env: Mapping[str, str]) -> Endpoint:
    token, ca = IN_CLUSTER_DIR / "token", IN_CLUSTER_DIR / "ca.crt"
    if not (token.is_file() and ca.is_file()):
        raise InvalidInputError(f"{NO_CONFIG}: no ServiceAccount token and CA in {IN_CLUSTER_DIR}")
    host, port = env["KUBERNETES_SERVICE_HOST"], env.get("KUBERNETES_SERVICE_PORT", "443")
    host = f"[{host}]" if ":" in host else host
    return Endpoint(server=f"https://{host}:{port}", ca_file=str(ca), token_file=str(token))


def _from_kubeconfig(path: Path) -> Endpoint:
    """The current context's cluster and user; relative file names are relative to the kubeconfig."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInputError(f"{NO_CONFIG}: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidFieldError("KUBECONFIG", "a kubeconfig (a YAML mapping)", str(path))
    context = _named(config, "contexts", config.get("current-context"), path)
    cluster = _named(config, "clusters", context.get("cluster"), path)
    user = _named(config, "users", context.get("user"), path)
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise InvalidFieldError(
            f"{path}: clusters[{context.get('cluster')}].cluster.server", "the API server's URL", repr(server)
        )
    unsupported = sorted(
        {"exec", "auth-provider", "username", "client-certificate-data", "client-key-data"} & set(user)
    )
    if unsupported:
        raise InvalidFieldError(
            f"{path}: users[{context.get('user')}].user.{unsupported[0]}",
            "a token, a tokenFile or client-certificate/client-key files (the worker's API client)",
            "unsupported",
        )

    def file(name: str | None) -> str | None:
        return None if name is None else str(path.parent / os.path.expanduser(name))

    ca_data = cluster.get("certificate-authority-data")
    return Endpoint(
        server=server,
        ca_file=file(cluster.get("certificate-authority")),
        ca_data=base64.b64decode(ca_data).decode() if ca_data else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_file=file(user.get("client-certificate")),
        key_file=file(user.get("client-key")),
        token=user.get("token"),
        token_file=file(user.get("tokenFile")),
    )


def _named(config: Mapping[str, Any], section: str, name: object, path: Path) -> Mapping[str, Any]:
    """What the entry of kubeconfig ``section`` called ``name`` holds (a ``contexts`` entry's ``context``,
    a ``clusters`` entry's ``cluster``, a ``users`` entry's ``user``; empty if it holds nothing).
    :class:`InvalidFieldError` naming the field if there is no such entry or it does not hold a mapping."""
    key = section.removesuffix("s")
    for entry in config.get(section) or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            held = entry.get(key) or {}
            if not isinstance(held, dict):
                raise InvalidFieldError(f"{path}: {section}[{name}].{key}", "a mapping", type(held).__name__)
            return held
    raise InvalidFieldError(f"{path}: {section}", f"an entry named {name!r}", "none")


# --- the client ---------------------------------------------------------------------------------


def pod_path(namespace: str, name: str = "") -> str:
    """The API path of one namespace's Pods, or of the Pod ``name``."""
    base = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods"
    return f"{base}/{quote(name, safe='')}" if name else base


class KubeHttp:
    """Requests to the API server at ``endpoint`` over one urllib3 pool (kept-alive connections, no retries:
    each caller has its own retry loop). Closing it closes the pool's connections."""

    def __init__(self, endpoint: Endpoint, *, connections: int = 4) -> None:
        self.endpoint = endpoint
        tls = _tls(endpoint) if endpoint.server.startswith("https:") else {}
        self._pool = urllib3.PoolManager(num_pools=1, maxsize=connections, retries=False, **tls)

    @classmethod
    def from_config(cls, host: str | None = None) -> KubeHttp:
        """A client for the :func:`load_endpoint` the environment names (``host`` first)."""
        return cls(load_endpoint(host))

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: object = None,
        content_type: str = "application/json",
        timeout: Timeout,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """One request; ``body`` is sent as JSON. With ``stream`` the body is left unread (the caller reads,
        then closes it). Raises :class:`ApiError` for an answer other than 2xx, urllib3's errors or
        ``OSError`` when the server is unreachable."""
        url = self.endpoint.server.rstrip("/") + path
        if query:
            url += "?" + urlencode({k: _query_value(v) for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json", **self._auth()}
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = content_type
        response = self._pool.request(
            method,
            url,
            body=data,
            headers=headers,
            timeout=_timeout(timeout),
            preload_content=not stream,
        )
        if not 200 <= response.status <= 299:
            raise _api_error(response)
        return response

    def pod_lister(self) -> Callable[[str, Query, Timeout], urllib3.BaseHTTPResponse]:
        """Lists or watches one namespace's Pods, for :class:`~warmserve.protocol.list_watch.ListWatch`."""

        def lister(namespace: str, query: Query, timeout: Timeout) -> urllib3.BaseHTTPResponse:
            return self.request("GET", pod_path(namespace), query=query, timeout=timeout, stream=True)

        return lister

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _auth(self) -> dict[str, str]:
        token = self.endpoint.token
        if self.endpoint.token_file is not None:
            token = Path(self.endpoint.token_file).read_text(encoding="utf-8").strip()
        return {"Authorization": f"Bearer {token}"} if token else {}


def _tls(endpoint: Endpoint) -> dict[str, Any]:
    """urllib3's TLS settings: the endpoint's CA (else the system's), client certificate, verification."""
    context = ssl.create_default_context(cafile=endpoint.ca_file, cadata=endpoint.ca_data)
    if endpoint.cert_file is not None:
        context.load_cert_chain(endpoint.cert_file, endpoint.key_file)
    if endpoint.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return {"ssl_context": context, "cert_reqs": "CERT_NONE", "assert_hostname": False}
    return {"ssl_context": context}


def _timeout(timeout: Timeout) -> urllib3.Timeout:
    """urllib3's timeout for ours: a pair bounds the connection and then each read (a watch may be quiet
    for as long as its read timeout), a number the whole request. (``urllib3.Timeout``'s first positional
    parameter is ``total``: a pair must be passed by name.)"""
    if isinstance(timeout, tuple):
        connect, read = timeout
        return urllib3.Timeout(connect=connect, read=read)
    return urllib3.Timeout(total=timeout)


def _query_value(value: str | int | bool) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _api_error(response: urllib3.BaseHTTPResponse) -> ApiError:
    """The error an answer other than 2xx means, with the API's ``Status`` message when there is one."""
    try:
        message = json.loads(response.data).get("message", "")
    except (ValueError, AttributeError):
        message = ""
    finally:
        response.release_conn()
    return ApiError(response.status, response.reason or "", str(message))
