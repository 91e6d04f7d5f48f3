"""``bench/bench_operator.py`` in its quick mode against the test control plane: both phases run to the end
(the pool and the models reconciled to Ready, every desired change applied and reported back) and yield
their figures. Whether the figures meet the floors is the benchmark's to say, not this test's."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_operator import QUICK, measure
from e2e.harness.cluster import Cluster

pytestmark = [pytest.mark.kube, pytest.mark.slow]


def test_the_operator_benchmark_runs_in_its_quick_mode(
    kube_cluster: Cluster, kube_namespace: str, tmp_path: Path
) -> None:
    pods, models, changes = QUICK
    log = tmp_path / "operator.log"
    figures = measure(kube_cluster, kube_namespace, pods=pods, models=models, changes=changes, log=log)
    assert figures.scaled.all_ready_s is not None, figures.scaled.last + "\n" + "\n".join(figures.log_tail)
    assert len(figures.applied) == len(figures.reported) == changes
    assert min(figures.applied) > 0 and min(figures.reported) > 0
    assert figures.rss_peak_mb > 0
