"""Wheel build hook: compiles the scheduler's decision core and the simulator's event loop with mypyc.

Why: the simulator runs the real scheduler at every 0.5 s of virtual time, 172,800 ticks a simulated day,
so the planner's Python speed is the simulator's speed. mypyc (the compiler black and mypy ship with)
turns the same strictly typed modules into C extensions about twice as fast, with identical decisions
(``tests/sim/test_compiled.py`` compares a compiled run with a pure one request by request).

Which modules: the ``compile`` list of this hook's table in ``pyproject.toml``. A regular wheel
(``pip install .``) holds each compiled module next to its source; Python imports the extension first.
Editable installs (``pip install -e .``) stay pure Python, because a compiled module left beside a source
being edited would shadow the edits; so does a build with ``WARMSERVE_PURE_PYTHON=1``. A machine without
a C compiler or Python's headers, or a module mypyc cannot compile, fails the build with an error saying
so: there is no silent fallback to pure Python.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def check_toolchain() -> None:
    """Raise, naming what is missing and the way out, unless a C compiler and Python's headers are here
    (setuptools' own error would be a compiler command line failing deep in the build log)."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    missing = [f"a C compiler ({compiler!r} not on PATH)"] if shutil.which(compiler) is None else []
    missing += [f"Python's C headers ({headers} not found)"] if not headers.is_file() else []
    if missing:
        raise RuntimeError(
            f"compiling warmserve's scheduler core with mypyc needs {' and '.join(missing)}; install them,"
            " or set WARMSERVE_PURE_PYTHON=1 to build a pure-Python wheel (the simulator runs half as fast)"
        )


def compile_modules(root: Path, sources: list[str], out: Path) -> dict[str, str]:
    """Compile ``sources`` (paths relative to ``root``) into ``out``; return each built extension's path
    mapped to its path inside the wheel. Raises (mypy's or the C compiler's error) when one fails."""
    from mypyc.build import mypycify
    from setuptools import Distribution  # type: ignore[import-untyped]

    cwd = os.getcwd()
    os.chdir(root)  # mypy reads pyproject.toml's [tool.mypy] (module paths of the namespace portions)
    try:
        # Imports outside the compiled set are followed for their types but not reported on, so a build
        # environment without the runtime dependencies (numpy, pandas) compiles the same modules.
        flags = ["--config-file", "pyproject.toml", "--follow-imports=silent", "--ignore-missing-imports"]
        extensions = mypycify([*flags, *sources], opt_level="3", target_dir=str(out / "c"))
        dist = Distribution({"name": "warmserve-compiled", "ext_modules": extensions})
        build = dist.get_command_obj("build_ext")
        build.build_lib, build.build_temp = str(out / "lib"), str(out / "tmp")
        build.parallel = os.cpu_count() or 1
        dist.run_command("build_ext")
    finally:
        os.chdir(cwd)
    lib = out / "lib"
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return {str(p): p.relative_to(lib).as_posix() for p in lib.rglob("*") if p.name.endswith(suffixes)}


class MypycBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        if os.environ.get("WARMSERVE_PURE_PYTHON") == "1":
            return
        sources = self.config.get("compile")
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise ValueError("tool.hatch.build.targets.wheel.hooks.custom.compile: expected a list of paths")
        check_toolchain()
        self._scratch = Path(tempfile.mkdtemp(prefix="warmserve-mypyc-"))
        build_data["force_include"].update(compile_modules(Path(self.root), sources, self._scratch))
        build_data["pure_python"] = False  # a platform wheel: the extensions are for this interpreter
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
