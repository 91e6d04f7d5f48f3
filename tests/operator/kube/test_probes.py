"""``warmserve operator``'s probes and its options, as a process, without a cluster: an operator that cannot
reach the API server is alive but not ready, says why, and shows itself not leading in ``/metrics``;
SIGTERM stops it (a standby) with exit 0; a port in use and options out of range are one-line errors
naming the option. tests/operator/kube/test_operator.py checks the probes of a leader and a standby."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from e2e.harness.cluster import free_port
from tests.operator.kube.test_operator import Operator
from warmserve.cli import build_parser, main


def unreachable_kubeconfig(path: Path) -> dict[str, str]:
    """The environment of an operator whose API server is a closed port."""
    cluster = {"server": f"http://127.0.0.1:{free_port()}"}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "away", "cluster": cluster}],
        "users": [{"name": "user", "user": {"token": "t"}}],
        "contexts": [{"name": "away", "context": {"cluster": "away", "user": "user"}}],
        "current-context": "away",
    }
    path.write_text(yaml.safe_dump(config))
    return {**os.environ, "KUBECONFIG": str(path)}


def test_an_operator_away_from_the_api_server_is_alive_not_ready_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = unreachable_kubeconfig(tmp_path / "kubeconfig")
    port, log = free_port(), tmp_path / "operator.log"
    argv = [sys.executable, "-m", "warmserve.cli", "operator", "--namespace", "ns", "--lease-duration", "2"]
    argv += ["--health-host", "127.0.0.1", "--health-port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    one = Operator(process, port, log)
    try:
        deadline = time.monotonic() + 30
        while one.get("/readyz")[0] == 0:  # not listening yet
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            time.sleep(0.1)
        status, text = one.get("/readyz")
        assert status == 503 and text.startswith("the Lease not reached yet: ") and "(standby)" in text
        assert one.get("/healthz") == (200, "ok (standby)\n")
        assert "warmserve_operator_leader 0.0" in one.get("/metrics")[1]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_health_port_in_use_exits_75_naming_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in unreachable_kubeconfig(tmp_path / "kubeconfig").items():
        monkeypatch.setenv(name, value)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(
            ["operator", "--namespace", "ns", "--health-host", "127.0.0.1", "--health-port", str(port)]
        )
    assert code == 75
    assert capsys.readouterr().err.startswith(
        f"warmserve: unavailable: --health-port: cannot listen on 127.0.0.1:{port}"
    )


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--lease-duration", "0"),
        ("--lease-duration", "1.5"),
        ("--lease-name", "Not_A_Name"),
        ("--health-port", "0"),
        ("--health-port", "65536"),
    ],
)
def test_options_out_of_range_are_refused_naming_the_option(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["operator", "--namespace", "ns", option, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: expected" in err and repr(value) in err
