"""The gateway's configuration: the declared models (with their cap B) and how requests are held.

Models are declared, not discovered: a model with zero instances is still listed in ``/v1/models`` and its
requests are held until an instance appears (or their deadline passes), never answered ``404``. Bad values
raise :class:`InvalidFieldError` naming the option, so the CLI reports them in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.pods import worker_selector
from warmserve.protocol.request_body import BODY_TIMEOUT_S

#: B when a model is declared without one; the same default as a ModelSpec's ``max_concurrency``.
DEFAULT_MAX_CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class DeclaredModel:
    """A model the gateway serves, and B: the requests it sends to one instance at most at once."""

    name: str
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway needs at start; ``workers`` can later be replaced at run time.

    ``queue_limit`` bounds the requests held per model (beyond it: ``503`` at once), ``hold_timeout_s``
    is how long one request may wait for an instance in total (then ``503``), ``retry_after_s`` is what
    the ``Retry-After`` header of those answers says. ``upstream_read_timeout_s`` bounds the silence of
    a worker on one request, so a hung worker cannot hang a client forever. ``body_timeout_s`` bounds
    how long a request's body may take to arrive once its headers are in (then ``408``).

    The workers are either the static ``workers`` or, when ``discover_namespace`` is set, the ready worker
    Pods ``worker_selector`` matches there (:mod:`.worker_pods`); both at once is an error.
    """

    models: tuple[DeclaredModel, ...]
    workers: tuple[str, ...] = ()
    discover_namespace: str | None = None
    worker_selector: str = worker_selector()
    queue_limit: int = 256
    hold_timeout_s: float = 30.0
    retry_after_s: int = 1
    poll_interval_s: float = 0.5
    upstream_read_timeout_s: float = 300.0
    body_timeout_s: float = BODY_TIMEOUT_S

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        for i, model in enumerate(self.models):
            if not model.name or names.index(model.name) != i:
                raise InvalidFieldError("models", "distinct, non-empty model names", model.name)
            _positive(model.max_concurrency, f"models[{model.name}].max_concurrency")
        object.__setattr__(self, "workers", check_worker_urls(self.workers))
        if self.discover_namespace is not None:
            if not self.discover_namespace:
                raise InvalidFieldError("discover_namespace", "a namespace name", self.discover_namespace)
            if self.workers:
                expected = "no static workers alongside (the Pods are the workers)"
                raise InvalidFieldError("discover_namespace", expected, self.workers)
            if self.models:
                expected = "no declared models alongside (the namespace's ModelDeployments are the models)"
                raise InvalidFieldError("discover_namespace", expected, [m.name for m in self.models])
        if not self.worker_selector:
            raise InvalidFieldError("worker_selector", "a label selector", self.worker_selector)
        _positive(self.queue_limit, "queue_limit")
        _positive(self.hold_timeout_s, "hold_timeout_s")
        _positive(self.retry_after_s, "retry_after_s")
        _positive(self.poll_interval_s, "poll_interval_s")
        _positive(self.upstream_read_timeout_s, "upstream_read_timeout_s")
        _positive(self.body_timeout_s, "body_timeout_s")


def parse_model_arg(text: str) -> DeclaredModel:
    """Parse ``NAME`` or ``NAME:B`` (the CLI's ``--model``); the last ``:`` separates B."""
    name, sep, cap = text.rpartition(":")
    if not sep:
        name, cap = text, str(DEFAULT_MAX_CONCURRENCY)
    if not name or not cap.isdigit() or int(cap) < 1:
        raise InvalidFieldError("--model", "NAME or NAME:B with B an integer >= 1", text)
    return DeclaredModel(name=name, max_concurrency=int(cap))


def check_worker_url(url: str) -> str:
    """A worker's base URL must be absolute http(s), without a trailing path to guess about."""
    if not url.startswith(("http://", "https://")) or url.rstrip("/").count("/") > 2:
        raise InvalidFieldError("workers", "a base URL such as http://10.0.0.5:8000", url)
    return url.rstrip("/")


def check_worker_urls(urls: Sequence[str]) -> tuple[str, ...]:
    """Validate and normalise a list of worker base URLs (duplicates are kept once, in order)."""
    return tuple(dict.fromkeys(check_worker_url(u) for u in urls))


def _positive(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidFieldError(name, "a number > 0", value)
