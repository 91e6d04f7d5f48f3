"""Judging desired-state documents, the feed every channel shares, and the file channel."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.worker.waiting import next_state, until
from warmserve.protocol.backoff import Backoff
from warmserve.protocol.state import DesiredState
from warmserve.worker.desired_feed import Accept, DesiredFeed, Ignore, Reject, judge
from warmserve.worker.desired_source import FileSource
from warmserve.worker.observed_sink import write_atomically

WORKER = "worker-a"


def desired(generation: int, *, worker: str = WORKER, gpus: list[int] | None = None) -> str:
    return json.dumps(
        {
            "worker": worker,
            "generation": generation,
            "models": {"qwen": {"weights": "/cache/qwen", "weight_bytes": 500}},
            "replicas": [{"id": "qwen-0", "model": "qwen", "gpus": gpus or [0], "role": "serve"}],
        }
    )


def test_judge_accepts_a_higher_generation() -> None:
    verdict = judge(desired(4), worker=WORKER, accepted=3, origin="test")
    assert isinstance(verdict, Accept)
    assert verdict.state == DesiredState.from_json(desired(4))


@pytest.mark.parametrize("generation", [2, 3])
def test_judge_ignores_a_repeated_or_lower_generation(generation: int) -> None:
    assert judge(desired(generation), worker=WORKER, accepted=3, origin="t") == Ignore(generation, 3)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", "desired"),
        ("[1, 2]", "desired"),
        (desired(1, gpus=[0, 0]), "replicas[0].gpus"),
        (desired(1).replace('"generation": 1', '"generation": "1"'), "generation"),
        (desired(1, worker="worker-b"), "worker"),
    ],
)
def test_judge_rejects_naming_the_field(text: str, field: str) -> None:
    verdict = judge(text, worker=WORKER, accepted=-1, origin="file /x")
    assert isinstance(verdict, Reject)
    assert verdict.rejection.field == field
    assert verdict.rejection.message.startswith(f"{field}: expected")
    assert verdict.rejection.origin == "file /x"


# A stream of documents: a generation, or None for a malformed one.
documents = st.lists(st.none() | st.integers(min_value=0, max_value=20), max_size=30)


def new_maxima(docs: list[int | None]) -> list[int]:
    maxima: list[int] = []
    for generation in docs:
        if generation is not None and generation > (maxima[-1] if maxima else -1):
            maxima.append(generation)
    return maxima


async def offer_all(feed: DesiredFeed, docs: list[int | None], *, between: Callable[[], object]) -> None:
    for generation in docs:
        feed.offer(desired(generation) if generation is not None else "{", "test")
        between()
        for _ in range(3):
            await asyncio.sleep(0)  # let a waiting consumer take what was accepted


@given(documents)
def test_feed_gives_a_prompt_consumer_every_new_maximum_in_order(docs: list[int | None]) -> None:
    async def run() -> list[int]:
        feed = DesiredFeed(WORKER)
        in_force = [-1]

        async def consume() -> list[int]:
            return [state.generation async for state in feed]

        consumer = asyncio.create_task(consume())
        await offer_all(feed, docs, between=lambda: in_force.append(feed.generation))
        feed.close()
        assert in_force[1:] == [
            max([-1, *(g for g in docs[: i + 1] if g is not None)]) for i in range(len(docs))
        ]
        return await consumer

    assert asyncio.run(run()) == new_maxima(docs)


@given(documents)
def test_feed_gives_a_late_consumer_only_the_newest_state(docs: list[int | None]) -> None:
    async def run() -> list[int]:
        feed = DesiredFeed(WORKER)
        await offer_all(feed, docs, between=lambda: None)
        feed.close()
        return [state.generation async for state in feed]

    assert asyncio.run(run()) == new_maxima(docs)[-1:]


@given(documents)
def test_rejection_is_set_by_a_malformed_document_and_cleared_by_an_accepted_one(
    docs: list[int | None],
) -> None:
    feed = DesiredFeed(WORKER)
    for generation in docs:
        verdict = feed.offer(desired(generation) if generation is not None else "{", "test")
        if generation is None:
            assert isinstance(verdict, Reject)
            assert feed.rejection == verdict.rejection
        elif isinstance(verdict, Accept):
            assert feed.rejection is None


async def test_rejections_reach_the_callback() -> None:
    seen: list[str] = []
    feed = DesiredFeed(WORKER, on_reject=lambda r: seen.append(r.field))
    feed.offer(desired(1, gpus=[0, 0]), "test")
    feed.offer(desired(1, worker="worker-b"), "test")
    assert seen == ["replicas[0].gpus", "worker"]


async def test_a_failed_channel_ends_iteration_with_its_error() -> None:
    feed = DesiredFeed(WORKER)
    feed.offer(desired(1), "test")
    feed.fail(RuntimeError("channel broke"))
    assert (await anext(feed)).generation == 1  # what was accepted is still handed over
    with pytest.raises(RuntimeError, match="channel broke"):
        await anext(feed)


def test_backoff_grows_to_its_maximum() -> None:
    backoff = Backoff(initial=0.1, factor=3.0, maximum=1.0)
    assert [backoff.delay(n) for n in range(4)] == pytest.approx([0.1, 0.3, 0.9, 1.0])


# --- the file channel ---------------------------------------------------------------------------


async def test_file_source_follows_atomic_replacements(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "desired.json"
    async with FileSource(path, WORKER, interval=0.01) as source:
        await asyncio.sleep(0.03)  # a few polls of a missing file: nothing happens
        assert source.feed.last_verdict is None
        write_atomically(path, desired(1))
        assert (await next_state(source)).generation == 1
        write_atomically(path, desired(2, gpus=[1]))
        assert (await next_state(source)).replicas[0].gpus == (1,)
        write_atomically(path, desired(3, gpus=[1, 1]))
        await until(lambda: source.rejection is not None)
        assert source.rejection is not None
        assert source.rejection.field == "replicas[0].gpus"
        assert source.rejection.origin == f"file {path}"
        assert source.feed.generation == 2  # kept
        with caplog.at_level(logging.WARNING, logger="warmserve.worker.desired_feed"):
            write_atomically(path, desired(1))
            await until(lambda: source.feed.last_verdict == Ignore(generation=1, accepted=2))
        assert "stale desired generation 1" in caplog.text
        write_atomically(path, desired(4))
        assert (await next_state(source)).generation == 4
        assert source.feed.rejection is None  # cleared (``source.rejection`` reads the same)
    with pytest.raises(StopAsyncIteration):
        await anext(aiter(source))


async def test_file_source_reads_a_file_rewritten_in_place_and_survives_its_removal(tmp_path: Path) -> None:
    path = tmp_path / "desired.json"
    path.write_text(desired(1))
    async with FileSource(path, WORKER, interval=0.01) as source:
        assert (await next_state(source)).generation == 1
        path.unlink()
        await asyncio.sleep(0.03)
        with path.open("w") as f:  # not atomic: a reader may see it half-written and must recover
            f.write(desired(2)[:10])
            f.flush()
            await asyncio.sleep(0.03)
            f.write(desired(2)[10:])
        assert (await next_state(source)).generation == 2


async def test_file_source_logs_an_unreadable_file_and_reads_it_when_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "desired.json"
    path.write_bytes(b"\xff\xfe not utf-8")
    async with FileSource(path, WORKER, interval=0.01) as source:
        await until(lambda: "cannot read desired state" in caplog.text)
        write_atomically(path, desired(7))
        assert (await next_state(source)).generation == 7
    assert os.listdir(tmp_path) == ["desired.json"]
