"""An emulated Kubernetes API for the faults the real one cannot show on demand: kmock's emulator on a
loopback port, with the gaps of kmock 0.8 filled.

Tests run against the real kube-apiserver of the test control plane (``kube_cluster``,
docs/test-cluster.md). Keep this emulator only for a fault that server cannot be made to show: a watch
closed from the server side (:meth:`KubeEmulator.close_watches`), a 410 Gone on a chosen watch
(:meth:`KubeEmulator.compact`, kmock's DSL) and counting open watches or requests
(``tests/worker/test_desired_source_kube.py``); ``tests/worker/test_desired_source_kube_api.py`` checks
the emulator's own behaviour against what those tests rely on. kmock's ``KubernetesEmulator`` is a
stateful in-memory API served over real HTTP with watch streams, so the real ``kubernetes`` client can talk
to it. kmock 0.8 leaves out what clients rely on for optimistic concurrency and resumable watches;
:class:`StampingEmulator` adds it:

- every create stamps ``uid``, ``creationTimestamp``, ``generation`` 1 and a ``resourceVersion``
  (one cluster-wide counter, as etcd's revision) and answers ``201``;
- every write (patch, delete) bumps ``resourceVersion``; a change outside ``metadata``/``status``
  bumps ``generation``; a no-op patch changes nothing and emits no event;
- a merge patch carrying ``metadata.resourceVersion`` other than the stored one fails with ``409``;
  a JSON patch whose ``test`` op fails (kopf tests ``resourceVersion`` in its finalizer patches) or
  that cannot apply fails with ``422``, the object untouched;
- list responses carry ``kind``, ``apiVersion`` and the current ``resourceVersion``;
- a watch loses no write made while it starts (kmock's can), honours ``timeoutSeconds`` (closes
  cleanly), sends only changes newer than its ``resourceVersion``, and answers an ERROR event with
  code 410 (Gone) for a ``resourceVersion`` older than the last :meth:`KubeEmulator.compact`;
- lists and watches honour ``fieldSelector`` terms (``path=value``, ``==``, ``!=`` on any field);
- :meth:`KubeEmulator.close_watches` ends every open watch stream from the server side.

Still missing (kmock's, not filled): PUT, label selectors (filter client-side), schema
validation, RBAC. The server runs on its own event loop in a daemon thread, so synchronous code
(the kubernetes client, ``kopf.testing.KopfRunner``) and async tests can use it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import gzip
import importlib.resources
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

import aiohttp.web
import attrs
import kmock
import kubernetes.client
import pytest
from kmock._internal import rendering  # Request is not re-exported under a stable name

T = TypeVar("T")

_WRITES = frozenset({kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE})


@attrs.define(kw_only=True)
class StampingEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with resource versions, generations, 201/409/410/422 and closable watches."""

    _revision: int = attrs.field(default=0, init=False)
    _compacted: int = attrs.field(default=0, init=False)
    # Writes are serialised so that stamping (read-compute-write) is atomic; reads never wait on it.
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _watch_stops: set[asyncio.Event] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock 404s a list of a resource it holds no object of and has no declaration for: declare
        # the builtin resources (pods, namespaces, ...) as a default k3s cluster serves them.
        self.resources.load_data(_bundled_resources())

    @property
    def open_watches(self) -> int:
        """How many watch streams are being served (and would end on :meth:`close_watches`)."""
        return len(self._watch_stops)

    def compact(self) -> None:
        """Forget history: a watch from any resourceVersion handed out so far gets 410 Gone.

        The revision moves on too, so that a list made afterwards gives a version one can watch from.
        """
        self._revision += 1
        self._compacted = self._revision

    def close_watches(self) -> None:
        """End every open watch stream cleanly, as an API server does on its timeout or restart."""
        for stop in self._watch_stops:
            stop.set()

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None or request.action not in _WRITES:
            return await super()._handle(request)
        # The stamps go into the parsed body in place: kmock matches its reactions to the request
        # object by identity, so the request cannot be replaced by an amended copy.
        async with self._write_lock:
            key = (request.resource, request.namespace, request.name or "")
            if request.action == kmock.action.CREATE:
                self._stamp_new(request)
            elif key in self.objects and not self.objects[key].deleted:
                current = self.objects[key].raw
                if request.action == kmock.action.DELETE:
                    self.objects[key].patch({"metadata": {"resourceVersion": self._next_revision()}})
                else:
                    after = _patched(current, request.data)
                    if after == current:
                        return aiohttp.web.json_response(current)
                    self._stamp_patch(request.data, current, after)
            response = await super()._handle(request)
        if request.action == kmock.action.CREATE and response.status == 200 and not response.prepared:
            response.set_status(201)
        return response

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _stamp_new(self, request: rendering.Request) -> None:
        if not isinstance(request.data, dict) or not isinstance(request.data.get("metadata"), dict):
            raise kmock.KubernetesError(status=422, reason="Invalid", message="metadata: Required value")
        meta = request.data["metadata"]
        if not meta.get("name"):
            raise kmock.KubernetesError(status=422, reason="Invalid", message="metadata.name: Required value")
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        now = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta.update(
            uid=str(uuid.uuid4()), creationTimestamp=now, generation=1, resourceVersion=self._next_revision()
        )

    def _stamp_patch(self, patch: Any, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
        """Add the new resourceVersion (and generation, if the spec changed) to the client's patch."""
        generation = int(before.get("metadata", {}).get("generation", 0))
        if _spec_of(after) != _spec_of(before):
            generation += 1
        stamps = {"resourceVersion": self._next_revision(), "generation": generation}
        if isinstance(patch, dict):
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != before.get("metadata", {}).get("resourceVersion"):
                raise kmock.KubernetesError(
                    status=409, reason="Conflict", message="the object has been modified; reload and retry"
                )
            patch["metadata"] = {**(patch.get("metadata") or {}), **stamps}
        else:
            patch.extend({"op": "add", "path": f"/metadata/{k}", "value": v} for k, v in stamps.items())

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        listing = await super()._serve_list(request)  # 404s an unknown resource
        assert isinstance(listing, dict)  # kmock builds it as a dict
        # Not ``resources.get()``: kmock's mapping creates a blank entry on a missed lookup.
        info = next((i for r, i in self.resources.items() if r == request.resource), None)
        kind = {"kind": f"{info.kind}List"} if isinstance(info, kmock.ResourceInfo) and info.kind else {}
        group = f"{request.resource.group}/" if request.resource and request.resource.group else ""
        version = request.resource.version if request.resource else "v1"
        return {
            **kind,
            "apiVersion": f"{group}{version}",
            "metadata": {"resourceVersion": str(self._revision)},
            "items": [obj for obj in listing["items"] if _selected(request, obj)],
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        """kmock's watch, reordered: the bus is marked before the snapshot, so no write falls between."""
        yield b""  # headers out: the client's call returns and it starts reading
        since = _int_or_none(request.params.get("resourceVersion"))
        if since is not None and since < self._compacted:
            yield {"type": "ERROR", "object": _gone(since, self._compacted)}
            return
        assert request.resource is not None  # routed here as a watch of a resource
        bus = self._buses[request.resource]
        mark = await bus.mark()
        stop = asyncio.Event()
        self._watch_stops.add(stop)
        timeout = _int_or_none(request.params.get("timeoutSeconds"))
        timer = asyncio.get_running_loop().call_later(timeout, stop.set) if timeout else None
        try:
            async with self._lock:
                snapshot: list[dict[str, Any]] = [
                    {"type": "ADDED", "object": obj.raw}
                    for (resource, _, _), obj in self.objects.items()
                    if resource == request.resource and not obj.deleted
                ]
            fresh = _Freshness(since)
            for event in snapshot:
                if _selected(request, event["object"]) and fresh(event):
                    yield event
            async for event in _until(stop, bus.stream(since=mark)):
                if _selected(request, event.get("object", {})) and fresh(event):
                    yield event
        finally:
            self._watch_stops.discard(stop)
            if timer is not None:
                timer.cancel()
            await bus.unmark(mark)


class _Freshness:
    """Passes an event only if its object is newer than ``since`` and than what was already sent of it.

    An object without a resourceVersion (put into ``emulator.objects`` directly) always passes.
    """

    def __init__(self, since: int | None) -> None:
        self._since = since if since is not None else -1
        self._sent: dict[tuple[str | None, str | None], int] = {}

    def __call__(self, event: Mapping[str, Any]) -> bool:
        meta = event.get("object", {}).get("metadata", {})
        version = _int_or_none(meta.get("resourceVersion"))
        if version is None:
            return True
        key = (meta.get("namespace"), meta.get("name"))
        if version <= max(self._since, self._sent.get(key, -1)):
            return False
        self._sent[key] = version
        return True


def _selected(request: rendering.Request, obj: Mapping[str, Any]) -> bool:
    """Does ``obj`` fall in the request's namespace, name and fieldSelector (``=``, ``==``, ``!=``)?"""
    meta = obj.get("metadata", {})
    if request.namespace is not None and meta.get("namespace") != request.namespace:
        return False
    if request.name is not None and meta.get("name") != request.name:
        return False
    for term in filter(None, request.params.get("fieldSelector", "").split(",")):
        path, negated, wanted = re.fullmatch(r"([^!=]+)(!?)==?(.*)", term).groups()  # type: ignore[union-attr]
        value: Any = obj
        for part in path.split("."):
            value = value.get(part, "") if isinstance(value, Mapping) else ""
        if (str(value) == wanted) == bool(negated):
            return False
    return True


@functools.cache
def _bundled_resources() -> bytes:
    """kmock's own list of builtin resources (``load_bundled()`` minus its deprecated file access)."""
    return gzip.decompress(
        importlib.resources.files("kmock._internal").joinpath("resources.json.gz").read_bytes()
    )


async def _until(stop: asyncio.Event, events: AsyncIterator[T]) -> AsyncIterator[T]:
    """Relay ``events`` until ``stop`` is set, then close the source (a bus stream never ends itself)."""
    stopped = asyncio.ensure_future(stop.wait())
    following: asyncio.Future[T] | None = None
    try:
        while True:
            following = asyncio.ensure_future(anext(events))
            await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                return
            try:
                item = following.result()
            except StopAsyncIteration:
                return
            yield item
    finally:  # also when the client hangs up: then aiohttp cancels the handler mid-wait
        stopped.cancel()
        if following is not None and not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await following


def _patched(obj: Mapping[str, Any], patch: Any) -> dict[str, Any]:
    """Apply a merge or JSON patch as kmock will; a patch that cannot apply is the client's 422."""
    trial = kmock.Object(obj)
    try:
        trial.patch(patch)
    except Exception as exc:  # jsonpatch's and kmock's errors share no base class
        raise kmock.KubernetesError(
            status=422, reason="Invalid", message=f"patch not applied: {exc}"
        ) from exc
    return dict(trial.raw)


def _spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in {"metadata", "status"}}


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _gone(since: int, compacted: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": 410,
        "reason": "Expired",
        "message": f"too old resource version: {since} ({compacted})",
    }


class KubeEmulator:
    """A running :class:`StampingEmulator` and its URL.

    Every method is safe to call from any thread and returns once done on the server's loop. Touch
    ``emulator`` itself (kmock's DSL, its objects) only inside :meth:`run`.
    """

    def __init__(self, emulator: StampingEmulator, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.emulator = emulator
        self.url = url
        self._loop = loop

    def api_client(self) -> kubernetes.client.ApiClient:
        """A new client of the real ``kubernetes`` package pointed at this server (no auth)."""
        config = kubernetes.client.Configuration(host=self.url)
        return kubernetes.client.ApiClient(config)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop and wait for its result (kmock's state lives there)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def count(self, criterion: Any) -> int:
        """How many requests matching a kmock criterion (``kmock.action.LIST``, ``"patch"``, ...) arrived."""
        return self._call(lambda: len(list(self.emulator[criterion])))

    def open_watches(self) -> int:
        return self._call(lambda: self.emulator.open_watches)

    def close_watches(self) -> None:
        self._call(self.emulator.close_watches)

    def compact(self) -> None:
        self._call(self.emulator.compact)

    def _call(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self.run(call())

    def object(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object as plain JSON data, or None if it does not exist (or was deleted)."""

        async def read() -> dict[str, Any] | None:
            key = (kmock.resource(resource), namespace, name)
            if key not in self.emulator.objects or self.emulator.objects[key].deleted:
                return None
            return dict(self.emulator.objects[key].raw)

        return self.run(read())


@contextlib.contextmanager
def running_kube_emulator() -> Iterator[KubeEmulator]:
    """Serve a fresh :class:`StampingEmulator` on 127.0.0.1 (a free port) until the block exits."""
    started: asyncio.Future[KubeEmulator] = asyncio.Future(loop=asyncio.new_event_loop())
    loop = started.get_loop()
    done = asyncio.Event()

    async def serve() -> None:
        async with StampingEmulator() as emulator, kmock.Server(emulator) as server:
            started.set_result(KubeEmulator(emulator, str(server.url).rstrip("/"), loop))
            await done.wait()
            emulator.close_watches()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(started), 10), loop).result()
    finally:
        loop.call_soon_threadsafe(done.set)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def kube_emulator() -> Iterator[KubeEmulator]:
    """A fresh Kubernetes API emulator per test (starts in milliseconds); see :class:`StampingEmulator`."""
    with running_kube_emulator() as emulator:
        yield emulator
