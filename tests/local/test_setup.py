"""The local setup's request cost agrees with what the fake engine actually plays."""

from __future__ import annotations

from warmserve.local.client import PROMPT
from warmserve.local.setup import PROMPT_TOKENS, LocalSetup
from warmserve.worker.engines.base import GenerateRequest
from warmserve.worker.engines.fake import FakeEngine


async def test_a_replay_prompt_is_costed_with_the_tokens_the_fake_engine_counts() -> None:
    setup = LocalSetup(models=("m",))
    engine = FakeEngine(setup.gpu, speed=0.0)
    prepared = await engine.prepare(setup.spec("m"), None, None)
    instance = await engine.promote(prepared, None, 1 << 30)
    events = [e async for e in instance.generate(GenerateRequest(PROMPT, max_tokens=2))]
    assert [e.prompt_tokens for e in events] == [PROMPT_TOKENS, PROMPT_TOKENS]
