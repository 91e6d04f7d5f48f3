"""``warmserve gateway``: bad options are one line naming the option; a real run serves until SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from warmserve.cli import main


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["gateway"], "--model"),
        (["gateway", "--model", "m:zero"], "--model"),
        (["gateway", "--model", "m", "--worker", "10.0.0.1:8000"], "--worker"),
        (["gateway", "--model", "m", "--hold-timeout", "0"], "--hold-timeout"),
        (["gateway", "--model", "m", "--queue-limit", "-3"], "--queue-limit"),
        (["gateway", "--model", "m", "--port", "70000"], "--port"),
        (["gateway", "--discover-namespace", ""], "--discover-namespace"),
        (["gateway", "--discover-namespace", "ns", "--worker-selector", ""], "--worker-selector"),
        (
            ["gateway", "--worker", "http://10.0.0.1:8000", "--discover-namespace", "ns"],
            "--worker and --discover-namespace",
        ),
        (["gateway", "--model", "m", "--discover-namespace", "ns"], "--model and --discover-namespace"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"warmserve: error: {named}") and "\n" not in err


def test_discovery_without_a_cluster_configuration_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert main(["gateway", "--discover-namespace", "ns"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("warmserve: error: no Kubernetes API configuration") and "\n" not in err


@pytest.mark.slow
def test_the_command_serves_declared_models_until_terminated() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "warmserve.cli", "gateway", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--model", "a:4", "--model", "b"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        body = b""
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as r:
                    body = r.read()
                break
            except OSError:
                time.sleep(0.1)
        assert b'"id": "a"' in body and b'"id": "b"' in body
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
