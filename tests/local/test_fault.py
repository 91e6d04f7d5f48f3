"""Killing a worker during a replay: every request ends in a response or an error, and the scheduler
notices within two ticks and serves the rest from the other worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from warmserve.local.arrivals import Arrival
from warmserve.local.policies import policy
from warmserve.local.runner import run_policy

from .conftest import FAST

KILL_AT_S = 2.0


@pytest.mark.slow
async def test_killing_a_worker_loses_no_request(tmp_path: Path) -> None:
    arrivals = [Arrival(i * 0.05, ("m-a", "m-b")[i % 2]) for i in range(140)]  # 7 s at 20 req/s
    result = await run_policy(
        FAST, policy("autoscale"), None, arrivals, tmp_path, progress=False, kill_worker_at_s=KILL_AT_S
    )
    outcomes = result.outcomes
    assert len(outcomes) == len(arrivals)
    assert all(o.ok or o.error for o in outcomes)  # each has a response or a stated error
    assert result.summary.figures.completed + result.summary.figures.dropped == len(arrivals)
    assert result.noticed_after_s is not None and result.noticed_after_s <= 2 * FAST.tick_s
    late = [o for o in outcomes if o.at_s > KILL_AT_S + 2.0]
    assert late and all(o.ok for o in late), [o.error for o in late if not o.ok][:3]
