"""Fuzzing the bodies the servers read: random and malformed JSON posted to the worker's and the gateway's
OpenAI endpoints and put to the worker's ``PUT /desired`` never gets a 5xx — bad input is the client's
fault, answered 4xx naming it (a well-formed request may also be served: 200).

The servers (a worker serving model ``m``, the gateway in front of it, and a second worker whose desired
state is fuzzed, so that a random valid document cannot take ``m`` away) run on an event loop in a
thread for the whole module; hypothesis drives plain HTTP clients against them, a bounded number of
examples each.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.conftest import start_gateway, start_worker, wait_for
from warmserve.gateway.config import DeclaredModel, GatewayConfig

EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
#: Values a request's fields are drawn from: plausible ones, and anything at all.
field_values = (
    st.sampled_from(["m", "nope", "", "hello there", "user", "assistant"])
    | st.integers(-3, 40)
    | st.lists(st.integers(-5, 2000), max_size=4)
    | st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "x"]), "content": json_values}))
    | json_values
)
FIELDS = ["model", "prompt", "messages", "max_tokens", "stream", "temperature", "top_p", "seed", "stop", "n"]
FIELDS += ["logprobs", "echo", "best_of", "tools", "stream_options", "user", "response_format"]
#: A request of a valid shape for model ``m`` with up to two fields changed to anything (so that many are
#: served and the rest are refused one field at a time), or any mix of fields at all.
valid_base = st.fixed_dictionaries(
    {
        "model": st.just("m"),
        "prompt": st.text(min_size=1, max_size=12) | st.lists(st.integers(0, 999), min_size=1, max_size=4),
        "messages": st.just([{"role": "user", "content": "hi"}]),
        "max_tokens": st.integers(1, 8),
    },
    optional={"stream": st.booleans(), "temperature": st.floats(0, 2), "seed": st.integers(0, 99)},
)
requests_like = st.one_of(
    st.tuples(valid_base, st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=2)).map(
        lambda pair: {**pair[0], **pair[1]}
    ),
    valid_base,
    st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=7),
)
desired_like = st.fixed_dictionaries(
    {},
    optional={
        "worker": st.sampled_from(["w9", "w9", "other"]) | json_values,
        "generation": st.integers(-2, 10**12) | json_values,
        "models": st.dictionaries(st.text(max_size=4), json_values, max_size=2) | json_values,
        "replicas": st.lists(st.dictionaries(st.sampled_from(["id", "model", "gpus", "role"]), json_values))
        | json_values,
    },
)


def encoded(doc: object) -> bytes:
    return json.dumps(doc).encode()


#: A body: JSON of a request's shape, any JSON, or bytes that may not be JSON (nor UTF-8) at all.
bodies = st.one_of(
    requests_like.map(encoded),
    json_values.map(encoded),
    st.binary(max_size=64),
    st.text(max_size=64).map(str.encode),
)
content_types = st.sampled_from(
    [None, "application/json", "application/json", "text/plain", "application/x+json"]
)


class Servers:
    """The servers on their own event loop in a thread (see the module docstring)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[Any] = []
        self.worker, self.gateway, self.spare = self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _start(self) -> tuple[str, str, str]:
        worker = await start_worker("w1", gpus=1)
        spare = await start_worker("w9", gpus=1)
        await worker.serve({"r1": "m"}, {"m": 4})
        gateway = await start_gateway(
            GatewayConfig(
                (DeclaredModel("m", 4),), workers=(worker.url,), poll_interval_s=0.05, hold_timeout_s=2
            )
        )
        self.runners += [worker.runner, spare.runner, gateway.runner]
        await wait_for(lambda: sum(map(len, gateway.gateway.router.table.values())) == 1)
        return worker.url, gateway.url, spare.url

    def stop(self) -> None:
        async def cleanup() -> None:
            for runner in self.runners:
                await runner.cleanup()

        self.run(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    running = Servers()
    yield running
    running.stop()


def status_of(method: str, url: str, body: bytes, content_type: str | None) -> int:
    """The status of one request; a streamed answer is not read (closing it cancels the request)."""
    headers = {"Content-Type": content_type} if content_type else {}
    with requests.request(method, url, data=body, headers=headers, timeout=30, stream=True) as response:
        return response.status_code


@pytest.mark.parametrize("server", ["worker", "gateway"])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@EXAMPLES
@given(body=bodies, content_type=content_types)
def test_no_body_posted_to_an_openai_endpoint_gets_a_5xx(
    servers: Servers, server: str, path: str, body: bytes, content_type: str | None
) -> None:
    base = servers.worker if server == "worker" else servers.gateway
    status = status_of("POST", base + path, body, content_type)
    assert status < 500, (status, body)


@EXAMPLES
@given(body=st.one_of(desired_like.map(encoded), bodies), content_type=content_types)
def test_no_body_put_to_desired_gets_a_5xx(servers: Servers, body: bytes, content_type: str | None) -> None:
    status = status_of("PUT", servers.spare + "/desired", body, content_type)
    assert status < 500, (status, body)
