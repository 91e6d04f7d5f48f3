"""The processes that run in numbers (one operator, a worker per Pod, the gateways) import neither pandas
nor statsmodels: only forecasting and the trace readers need them, and importing them cost each process
about 150 MB and seconds of CPU at start (docs/operator.md, "Floors")."""

from __future__ import annotations

import subprocess
import sys


def test_the_operator_worker_and_gateway_commands_import_no_pandas_or_statsmodels() -> None:
    code = (
        "import sys\n"
        "import warmserve.gateway.cli, warmserve.operator.kube.cli, warmserve.worker.cli\n"
        "print(sorted(m for m in ('pandas', 'scipy', 'statsmodels') if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
