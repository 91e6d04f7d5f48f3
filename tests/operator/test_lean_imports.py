"""The processes that run in numbers (one operator, a worker per Pod, the gateways) import neither pandas
nor statsmodels: only forecasting's backtests and the trace readers need them, and importing them cost each
process about 150 MB and seconds of CPU at start (docs/operator.md, "Floors"). The `warmserve` command
imports only the module of the subcommand it runs, so the others' imports do not reach these processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = "print(sorted(m for m in ('pandas', 'scipy', 'statsmodels') if m in sys.modules))\n"


def loaded(code: str) -> str:
    """The heavy modules loaded once ``code`` has run in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\n{HEAVY}"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_the_operator_worker_and_gateway_modules_import_no_pandas_or_statsmodels() -> None:
    modules = "warmserve.gateway.cli, warmserve.operator.kube.cli, warmserve.operator.kube.operator"
    assert loaded(f"import {modules}, warmserve.worker.cli") == "[]"


@pytest.mark.parametrize("command", ["worker", "gateway", "operator"])
def test_the_warmserve_command_runs_them_without_pandas_or_statsmodels(command: str) -> None:
    code = (
        "import contextlib\n"
        "from warmserve.cli import main\n"
        "with contextlib.suppress(SystemExit):\n"
        f"    main([{command!r}, '--help'])\n"
    )
    assert loaded(code) == "[]"
