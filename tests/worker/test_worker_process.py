"""The `warmserve worker` process, for real: a subprocess driven over HTTP and through its files.

Fake engine (no delays): desired state by HTTP PUT and by file sharing one set of generation rules,
a real completion, a 404 in OpenAI's format, a crash (SIGKILL) and a restart that reports an empty,
truthful state, a clean SIGTERM; bad options refused in one line naming the option.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from warmserve.cli import main
from warmserve.protocol.errors import InvalidFieldError
from warmserve.protocol.state import ObservedState, ReplicaState
from warmserve.worker.observed_sink import write_atomically
from warmserve.worker.process import default_name, parse_size

GIB = 2**30
MODEL = {
    "weights": "/cache/llama",
    "weight_bytes": 2 * GIB,
    "max_concurrency": 4,
    "engine_args": {"shape": "llama3-8b"},
}
STARTUP_S = 60.0  # a cold interpreter importing torch on two cores busy with other work


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def desired(
    worker: str, generation: int, *replicas: dict[str, Any], models: dict[str, Any] | None = None
) -> str:
    doc = {"worker": worker, "generation": generation, "models": models or {"llama": MODEL}}
    return json.dumps(doc | {"replicas": list(replicas)})


class WorkerProcess:
    """One `warmserve worker` subprocess on a free port; its stderr goes to a log file for failures."""

    def __init__(self, name: str, args: Sequence[str], log: Path, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "warmserve.cli", "worker", "--name", name]
        command += ["--port", str(self.port), *args]
        env = os.environ | {"PYTHONUNBUFFERED": "1"}
        with log.open("a") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"worker not ready in {STARTUP_S} s: {self.log.read_text()}")

    def state(self) -> ObservedState:
        return ObservedState.from_json(requests.get(f"{self.url}/state", timeout=5).text)

    def put(self, document: str) -> requests.Response:
        return requests.put(f"{self.url}/desired", data=document, timeout=5)

    def complete(self, model: str, prompt: str, max_tokens: int, timeout: float = 30) -> requests.Response:
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        return requests.post(f"{self.url}/v1/completions", json=body, timeout=timeout)

    def wait_for(self, predicate: Callable[[ObservedState], bool], timeout: float = 30) -> ObservedState:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"state not reached in {timeout} s: {state}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def states(observed: ObservedState) -> dict[str, ReplicaState]:
    return {r.id: r.state for r in observed.replicas}


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers on demand; any still running at the end are killed."""
    started: list[WorkerProcess] = []

    def start(name: str, *args: str, port: int | None = None) -> WorkerProcess:
        worker = WorkerProcess(name, args, tmp_path / f"{name}.log", port)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()


@pytest.mark.slow
def test_serves_then_a_crash_and_restart_report_an_empty_truthful_state(
    workers: Callable[..., WorkerProcess],
) -> None:
    worker = workers("w0", "--gpus", "2", "--gpu-memory", "80GiB", "--speed", "0")
    assert (
        worker.put(desired("w0", 1, {"id": "l0", "model": "llama", "gpus": [0], "role": "serve"})).status_code
        == 202
    )
    serving = worker.wait_for(lambda s: states(s) == {"l0": ReplicaState.SERVING})
    assert serving.observed_generation == 1
    assert serving.gpus[0].used_bytes == 80 * GIB and serving.gpus[1].used_bytes == 0

    done = worker.complete("llama", "hello", 3)
    assert done.status_code == 200
    assert done.json()["usage"]["completion_tokens"] == 3
    missing = worker.complete("mistral", "hello", 3)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"

    assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
    again = workers("w0", "--gpus", "2", "--gpu-memory", "80GiB", "--speed", "0", port=worker.port)
    fresh = again.state()
    assert fresh.observed_generation == -1
    assert fresh.replicas == ()
    assert [g.used_bytes for g in fresh.gpus] == [0, 0]
    assert again.complete("llama", "hello", 3).status_code == 404

    started = time.monotonic()
    assert again.stop(signal.SIGTERM) == 0, again.log.read_text()[-3000:]
    assert time.monotonic() - started < 15


@pytest.mark.slow
def test_file_and_http_share_one_feed_of_desired_states(
    workers: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    desired_file, observed_file = tmp_path / "desired.json", tmp_path / "observed.json"
    worker = workers(
        "w1", "--gpu-memory", "8GiB", "--speed", "0",
        "--desired-file", str(desired_file), "--observed-file", str(observed_file),
    )  # fmt: skip

    def observed() -> ObservedState | None:
        return ObservedState.from_json(observed_file.read_text()) if observed_file.exists() else None

    write_atomically(
        desired_file, desired("w1", 2, {"id": "a", "model": "llama", "gpus": [0], "role": "prewarm"})
    )
    worker.wait_for(lambda s: states(s) == {"a": ReplicaState.PREWARMED} and s.observed_generation == 2)
    deadline = time.monotonic() + 10
    while (o := observed()) is None or o.observed_generation != 2:
        assert time.monotonic() < deadline, f"observed file not written: {o}"
        time.sleep(0.05)
    assert states(o) == {"a": ReplicaState.PREWARMED}

    stale = worker.put(desired("w1", 1))  # older than the file's generation 2: the one feed says so
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "stale_generation"
    assert (
        worker.put(
            desired("w1", 2, {"id": "a", "model": "llama", "gpus": [0], "role": "prewarm"})
        ).status_code
        == 202
    )
    served = worker.put(desired("w1", 3, {"id": "a", "model": "llama", "gpus": [0], "role": "serve"}))
    assert served.json() == {"accepted_generation": 3}
    worker.wait_for(lambda s: states(s) == {"a": ReplicaState.SERVING})

    bad = desired("w1", 4, {"id": "a", "model": "llama", "gpus": [3], "role": "serve"})
    write_atomically(desired_file, bad)  # this worker has one GPU
    rejected = worker.wait_for(lambda s: s.error != "")
    assert "replicas[0].gpus" in rejected.error
    assert rejected.observed_generation == 3 and states(rejected) == {"a": ReplicaState.SERVING}
    bad_put = worker.put(bad.replace('"generation": 4', '"generation": 5'))
    assert bad_put.status_code == 400 and bad_put.json()["error"]["param"] == "replicas[0].gpus"
    assert worker.stop() == 0, worker.log.read_text()[-3000:]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--gpu-memory", "12XB"], "--gpu-memory"),
        (["--engine", "torch"], "--store"),
        (["--engine", "torch", "--pool", "fake"], "--pool"),
        (["--gpu-profile", "z80"], "--gpu-profile"),
        (["--speed", "-1"], "--speed"),
        (["--kube", "--desired-file", "desired.json"], "--kube"),
        (["--observed-file", "/no/such/dir/o.json"], "--observed-file"),
        (["--gpus", "0"], "gpus"),
    ],
)
def test_bad_options_are_refused_in_one_line_naming_the_option(
    args: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker", "--name", "w", "--port", "0", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"warmserve: error: {option}:")
    assert "\n" not in err


@given(st.integers(0, 2**20), st.sampled_from([("", 1), ("KiB", 2**10), ("MiB", 2**20), ("GiB", 2**30)]))
def test_sizes_parse_in_binary_units(n: int, unit: tuple[str, int]) -> None:
    assert parse_size(f"{n}{unit[0]}") == n * unit[1]
    assert parse_size(f" {n} {unit[0].lower()} ") == n * unit[1]


@pytest.mark.parametrize("text", ["", "GiB", "1.5GiB", "-1", "80GB", "80 G i B"])
def test_sizes_in_other_forms_name_the_option(text: str) -> None:
    with pytest.raises(InvalidFieldError) as err:
        parse_size(text)
    assert err.value.field == "--gpu-memory"


def test_the_default_name_is_the_pod_name_else_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "worker-7")
    assert default_name() == "worker-7"
    monkeypatch.delenv("POD_NAME")
    assert default_name() == socket.gethostname()
