"""Streams are forwarded in whole server-sent events, however the upstream bytes are chunked."""

from __future__ import annotations

import itertools

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmserve.gateway.proxy import MAX_EVENT_BYTES, _EventSplitter

_events = st.lists(st.text('ab {}:"', min_size=1, max_size=30).map(lambda t: f"data: {t}\n\n".encode()))


@given(_events, st.lists(st.integers(0, 60), max_size=20))
def test_whole_events_come_out_in_order_whatever_the_chunking(events: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(events)
    bounds = sorted({min(c * 3, len(stream)) for c in cuts} | {0, len(stream)})
    splitter = _EventSplitter()
    out = [splitter.feed(stream[a:b]) for a, b in itertools.pairwise(bounds)]
    assert b"".join(out) == stream
    assert all(piece.endswith(b"\n\n") for piece in out if piece)


def test_an_endless_event_is_a_broken_stream() -> None:
    splitter = _EventSplitter()
    assert splitter.feed(b"data: " + b"x" * (MAX_EVENT_BYTES // 2)) == b""
    with pytest.raises(aiohttp.ClientPayloadError):
        splitter.feed(b"x" * MAX_EVENT_BYTES)
