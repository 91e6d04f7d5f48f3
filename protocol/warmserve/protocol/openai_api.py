"""The OpenAI-compatible request and response shapes, shared by the worker and the gateway.

Requests are validated here once, field by field: a bad one raises :class:`InvalidFieldError`, which the
HTTP layers answer with ``400`` in OpenAI's error format (``{"error": {"message", "type", "param",
"code"}}``, ``param`` naming the field). Responses and stream chunks are built here so that a client sees
the same objects whichever component answers.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import load_json

#: The header that names the exact replica a request is for (the gateway balances across replicas itself).
REPLICA_HEADER = "X-WarmServe-Replica"
#: The largest ``max_tokens`` accepted; larger is "absurd" and answered with a 400, not an endless stream.
MAX_TOKENS_LIMIT = 32_768
DEFAULT_MAX_TOKENS = 16

Kind = Literal["completion", "chat"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One validated completion or chat request."""

    kind: Kind
    model: str
    prompt: str | tuple[int, ...]  # text, or token ids (completions only); empty for chat
    messages: tuple[ChatMessage, ...]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    stream: bool


#: OpenAI fields this server does not implement, with the values that ask for nothing (absent and null
#: too). Any other value is refused naming the field: silently answering one choice to ``n: 3``, or no
#: log-probabilities to ``logprobs: true``, would be a wrong answer, not a partial one.
NOT_SUPPORTED: Mapping[str, tuple[object, ...]] = {
    "n": (1,),
    "best_of": (1,),
    "echo": (False,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "suffix": ("",),
    "logit_bias": ({},),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "tools": ([],),
    "tool_choice": ("none",),
    "functions": ([],),
    "function_call": ("none",),
    "response_format": ({"type": "text"},),
}


def parse_request(body: bytes | str | Mapping[str, Any], kind: Kind) -> GenerationRequest:
    """Validate a request body; raise :class:`InvalidFieldError` naming the first bad field."""
    doc = _decode(body)
    _refuse_unsupported(doc)
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidFieldError("model", "a non-empty string naming a served model", model)
    prompt: str | tuple[int, ...] = ""
    messages: tuple[ChatMessage, ...] = ()
    if kind == "completion":
        prompt = _prompt(doc.get("prompt"))
    else:
        messages = _messages(doc.get("messages"))
    limit_key = "max_completion_tokens" if kind == "chat" and "max_completion_tokens" in doc else "max_tokens"
    return GenerationRequest(
        kind=kind,
        model=model,
        prompt=prompt,
        messages=messages,
        max_tokens=_bounded_int(doc.get(limit_key, DEFAULT_MAX_TOKENS), limit_key, 1, MAX_TOKENS_LIMIT),
        temperature=_bounded_float(doc.get("temperature", 1.0), "temperature", 0.0, 2.0),
        top_p=_bounded_float(doc.get("top_p", 1.0), "top_p", 0.0, 1.0, open_low=True),
        seed=None if doc.get("seed") is None else _bounded_int(doc.get("seed"), "seed", 0, 2**63 - 1),
        stop=_stop(doc.get("stop")),
        stream=_flag(doc.get("stream", False), "stream"),
    )


def render_chat(messages: Sequence[ChatMessage]) -> str:
    """Chat messages as one prompt: a ``role: content`` line each, then ``assistant:`` to answer.

    A plain, model-neutral rendering; engines whose tokenizer has a chat template may apply that instead.
    """
    return "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:"


def error_body(
    message: str, *, param: str | None = None, kind: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def new_id(kind: Kind) -> str:
    return ("cmpl-" if kind == "completion" else "chatcmpl-") + uuid.uuid4().hex[:24]


def response_body(
    request: GenerationRequest,
    rid: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    """A whole (non-streamed) completion or chat completion."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
    if request.kind == "completion":
        choice["text"] = text
    else:
        choice["message"] = {"role": "assistant", "content": text}
    return {
        "id": rid,
        "object": "text_completion" if request.kind == "completion" else "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chunk_body(request: GenerationRequest, rid: str, text: str, finish_reason: str | None) -> dict[str, Any]:
    """One server-sent-event chunk of a streamed response."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
    if request.kind == "completion":
        choice["text"] = text
    else:
        choice["delta"] = {"content": text} if finish_reason is None else {}
    return {
        "id": rid,
        "object": "text_completion" if request.kind == "completion" else "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.model,
        "choices": [choice],
    }


def sse(data: Mapping[str, Any] | str) -> bytes:
    """Frame one server-sent event (``[DONE]`` is passed as the plain string)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event a client reads from a streamed completion: a ``chunk`` (its JSON text), the server's
    ``error`` event (its JSON text), or ``done`` (``[DONE]``, after which nothing more is read)."""

    kind: Literal["chunk", "error", "done"]
    data: str


async def stream_events(lines: AsyncIterable[bytes]) -> AsyncIterator[StreamEvent]:
    """The ``data:`` events of a streamed completion's body, read line by line, in order; stops after
    ``[DONE]``. Other lines (blank separators, comments) are skipped. A stream that ends without
    ``[DONE]`` simply ends: the caller counts that as a cut stream. A data line that is not JSON raises
    ``ValueError``."""
    async for raw in lines:
        line = raw.decode(errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            yield StreamEvent("done", data)
            return
        doc = json.loads(data)
        yield StreamEvent("error" if isinstance(doc, dict) and "error" in doc else "chunk", data)


def models_body(names: Sequence[str], owner: str = "warmserve") -> dict[str, Any]:
    """The ``/v1/models`` list."""
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 0, "owned_by": owner} for n in names],
    }


# --- field validation ---------------------------------------------------------------------------


def _decode(body: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        return body
    doc = load_json(body, "body")
    if not isinstance(doc, dict):
        raise InvalidFieldError("body", "a JSON object", type(doc).__name__)
    return doc


def _refuse_unsupported(doc: Mapping[str, Any]) -> None:
    for field, inert in NOT_SUPPORTED.items():
        value = doc.get(field)
        if value is not None and not any(type(value) is type(v) and value == v for v in inert):
            accepted = " or ".join(json.dumps(v) for v in inert)
            raise InvalidFieldError(
                field, f"absent, null or {accepted} (not supported by this server)", value
            )


def _prompt(value: object) -> str | tuple[int, ...]:
    """A completion's prompt; empty text is refused here, where the gateway checks a request too, so that
    the gateway does not forward (and count as an arrival) what every worker refuses."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if isinstance(value, str) and value:
        return value
    if (
        isinstance(value, list)
        and value
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)
    ):
        return tuple(value)
    raise InvalidFieldError(
        "prompt", "a non-empty string, a list of one, or a non-empty list of token ids", value
    )


def _messages(value: object) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidFieldError("messages", "a non-empty list of {role, content} objects", value)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise InvalidFieldError(f"messages[{i}]", "an object with role and content", m)
        role = m.get("role")
        if role not in {"system", "user", "assistant", "developer", "tool"}:
            raise InvalidFieldError(f"messages[{i}].role", "system, user, assistant, developer or tool", role)
        out.append(ChatMessage(role=role, content=_content(m.get("content"), f"messages[{i}].content")))
    return tuple(out)


def _content(value: object, name: str) -> str:
    """Plain text, or OpenAI's list of content parts of which only text parts are accepted."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        texts = [p.get("text") for p in value]
        if all(isinstance(t, str) for t in texts):
            return "".join(str(t) for t in texts)
    raise InvalidFieldError(name, "a string or a list of text parts", value)


def _stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) and s for s in value):
        return tuple(value)
    raise InvalidFieldError("stop", "a string or a list of up to 4 non-empty strings", value)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidFieldError(name, "true or false", value)
    return value


def _bounded_int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidFieldError(name, f"an integer from {low} to {high}", value)
    return value


def _bounded_float(value: object, name: str, low: float, high: float, *, open_low: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    number = float(value) if ok else 0.0  # type: ignore[arg-type]
    if not ok or not (low < number <= high if open_low else low <= number <= high):
        bounds = f"({low}, {high}]" if open_low else f"[{low}, {high}]"
        raise InvalidFieldError(name, f"a number in {bounds}", value)
    return number
