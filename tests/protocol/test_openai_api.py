"""OpenAI request validation: every bad field is named; good requests keep their meaning."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.openai_api import (
    MAX_TOKENS_LIMIT,
    StreamEvent,
    chunk_body,
    parse_request,
    response_body,
    sse,
    stream_events,
)


def test_completion_request_parses_text_and_token_prompts() -> None:
    req = parse_request(
        b'{"model": "m", "prompt": "hi", "max_tokens": 5, "temperature": 0, "stop": "."}', "completion"
    )
    assert (req.model, req.prompt, req.max_tokens, req.temperature, req.stop) == ("m", "hi", 5, 0.0, (".",))
    assert parse_request({"model": "m", "prompt": [1, 2, 3]}, "completion").prompt == (1, 2, 3)


def test_chat_request_accepts_text_parts_and_max_completion_tokens() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
        ],
        "max_completion_tokens": 7,
        "stream": True,
    }
    req = parse_request(body, "chat")
    assert req.messages[0].content == "ab"
    assert (req.max_tokens, req.stream) == (7, True)


@pytest.mark.parametrize(
    ("body", "kind", "field"),
    [
        (b"{oops", "completion", "body"),
        (b"[1, 2]", "completion", "body"),
        ({"prompt": "x"}, "completion", "model"),
        ({"model": "m"}, "completion", "prompt"),
        ({"model": "m", "prompt": "x", "max_tokens": MAX_TOKENS_LIMIT + 1}, "completion", "max_tokens"),
        ({"model": "m", "prompt": "x", "max_tokens": 0}, "completion", "max_tokens"),
        ({"model": "m", "prompt": "x", "temperature": -1}, "completion", "temperature"),
        ({"model": "m", "prompt": "x", "top_p": 0}, "completion", "top_p"),
        ({"model": "m", "prompt": "x", "stream": "yes"}, "completion", "stream"),
        ({"model": "m", "prompt": "x", "stop": ["a", ""]}, "completion", "stop"),
        ({"model": "m", "messages": []}, "chat", "messages"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "chat", "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 3}]}, "chat", "messages[0].content"),
    ],
)
def test_bad_requests_name_the_field(body: Any, kind: Any, field: str) -> None:
    with pytest.raises(InvalidFieldError) as err:
        parse_request(body, kind)
    assert err.value.field == field


def test_response_shapes_follow_openai() -> None:
    chat = parse_request({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "chat")
    whole = response_body(chat, "chatcmpl-1", "hello", "stop", 3, 2)
    assert whole["object"] == "chat.completion"
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": "hello"}
    assert whole["usage"]["total_tokens"] == 5
    chunk = chunk_body(chat, "chatcmpl-1", "he", None)
    assert chunk["choices"][0]["delta"] == {"content": "he"}
    frame = sse(chunk)
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    assert json.loads(frame[6:]) == chunk
    assert sse("[DONE]") == b"data: [DONE]\n\n"


async def _lines(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _events(*chunks: bytes) -> list[StreamEvent]:
    return [event async for event in stream_events(_lines(*chunks))]


def test_stream_events_read_chunks_errors_and_the_end_as_the_server_frames_them() -> None:
    chunk = {"choices": [{"text": "hi"}]}
    framed = [sse(chunk), b": keep-alive\n", sse({"error": {"message": "gone"}}), sse("[DONE]"), sse(chunk)]
    lines = [line + b"\n" for frame in framed for line in frame.split(b"\n") if line]
    events = asyncio.run(_events(*lines))
    assert [e.kind for e in events] == ["chunk", "error", "done"]  # nothing is read after [DONE]
    assert json.loads(events[0].data) == chunk


def test_a_stream_cut_short_just_ends_and_a_garbled_line_is_an_error() -> None:
    assert asyncio.run(_events(sse({"choices": []}))) == [StreamEvent("chunk", '{"choices":[]}')]
    with pytest.raises(ValueError):
        asyncio.run(_events(b"data: {not json\n"))
