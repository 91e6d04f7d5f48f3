"""The mypyc-compiled build (``hatch_build.py``) decides exactly as the pure-Python sources do.

The wheel is built here as ``pip install .`` would build it (the hook compiles the modules listed in
pyproject.toml), unpacked, and put first on the path of a child process that replays a busy 20 minutes of
the ServeGen trace under ``warmserve``; a second child replays it from the sources. Every request's first
token and finish time must be the same to the bit, and every listed module must really have run compiled.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.compile_list import compiled_module_names

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT.parent / "shared" / "traces" / "servegen" / "data" / "language"

REPLAY = """
import hashlib, json, logging
from pathlib import Path
import numpy as np
from warmserve.sim.results import summarize
from warmserve.sim.scenario import Scenario, compiled_modules, prepare, run_policy
from warmserve.sim.workload import WorkloadSpec

logging.disable(logging.WARNING)
scenario = Scenario(WorkloadSpec(Path({trace!r}), duration_s=1200.0, offset_s=36000.0))
workload, models = prepare(scenario)
result = run_policy(scenario, workload, models, "warmserve")
times = np.concatenate([result.first_token, result.finish]).tobytes()
print(json.dumps({{
    "compiled": compiled_modules(),
    "times": hashlib.sha256(times).hexdigest(),
    "summary": summarize(result),
    "ticks": result.ticks_run,
}}))
"""


def _replay(path_first: Path | None) -> dict[str, object]:
    env = dict(os.environ)
    if path_first is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(path_first), env.get("PYTHONPATH"))))
    done = subprocess.run(
        [sys.executable, "-c", REPLAY.format(trace=str(TRACE))],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.splitlines()[-1]))


def _wheel(out: Path, pure: bool) -> Path:
    """Build the project's wheel into ``out`` as pip does (without build isolation: the test environment
    has the hook's tools), compiled unless ``pure``; return its path."""
    env = {k: v for k, v in os.environ.items() if k != "WARMSERVE_PURE_PYTHON"}
    if pure:
        env["WARMSERVE_PURE_PYTHON"] = "1"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    built = subprocess.run(
        [*pip, "-w", str(out), str(ROOT)], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = out.glob("warmserve-*.whl")
    return wheel


@pytest.fixture(scope="module")
def compiled_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The regular wheel, built and unpacked (the extensions sit beside their sources, as installed)."""
    out = tmp_path_factory.mktemp("wheel")
    site = out / "site"
    with zipfile.ZipFile(_wheel(out, pure=False)) as archive:
        archive.extractall(site)
    return site


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the wheel's mypyc build alone can take several minutes
def test_the_compiled_core_replays_a_busy_trace_exactly_as_the_sources_do(compiled_site: Path) -> None:
    expected = compiled_module_names()
    compiled = _replay(compiled_site)
    pure = _replay(None)
    assert compiled["compiled"] == expected
    assert pure["compiled"] == []  # the tests run on an editable install, which compiles nothing
    assert compiled["ticks"] == pure["ticks"]
    assert compiled["summary"] == pure["summary"]
    assert compiled["times"] == pure["times"]


@pytest.mark.slow
def test_warmserve_pure_python_builds_a_pure_wheel(tmp_path: Path) -> None:
    """The switch for a machine without a C compiler: a universal wheel with no extension in it."""
    wheel = _wheel(tmp_path, pure=True)
    with zipfile.ZipFile(wheel) as archive:
        assert not [n for n in archive.namelist() if n.endswith(".so")]
    assert wheel.name.endswith("-py3-none-any.whl")


def test_a_missing_c_compiler_is_named_with_the_way_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = importlib.util.spec_from_file_location("hatch_build", ROOT / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    hook.check_toolchain()  # this machine has gcc and the headers
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no compiler to be found
    with pytest.raises(RuntimeError, match=r"needs a C compiler .* WARMSERVE_PURE_PYTHON=1"):
        hook.check_toolchain()
