"""A real local cluster (fake-GPU worker processes at zero delay, a gateway process) for the tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from warmserve.local.processes import Children
from warmserve.local.runner import Endpoints, child_specs
from warmserve.local.setup import LocalSetup

FAST = LocalSetup(
    models=("m-a", "m-b"), workers=2, gpus=2, gpu_memory_gib=40, speed=0.0, max_tokens=4, tick_s=0.2
)


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Children, Endpoints]]:
    """Two workers and a gateway, ready; stopped after the module; a test killing one runs last."""
    specs, endpoints = child_specs(FAST)
    with Children(tmp_path_factory.mktemp("logs"), grace_s=3.0) as children:
        children.start_all(specs, timeout_s=90)
        yield children, endpoints
