"""``warmserve local --serve``: the official openai client (streaming included) and curl work against it,
and SIGTERM stops the command and every process it started."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from warmserve.local.processes import free_port

from .process_checks import assert_all_gone, children_of, stop


@pytest.mark.slow
def test_serve_answers_the_openai_client_and_curl_then_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "warmserve.cli", "local", "--serve", "--port", str(port)]
    argv += ["--speed", "0", "--log-dir", str(tmp_path)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children: list[int] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once every process is ready
        assert f"http://127.0.0.1:{port}/v1" in line, proc.stderr.read() if proc.stderr else ""
        children = children_of(proc.pid)
        assert len(children) == 3  # two workers and the gateway

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        assert {m.id for m in client.models.list()} == {"m-large", "m-mid", "m-small"}
        done = client.completions.create(model="m-small", prompt="Hello", max_tokens=5)
        assert done.choices[0].text and done.usage is not None and done.usage.completion_tokens == 5
        stream = client.chat.completions.create(
            model="m-mid", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, stream=True
        )
        pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
        assert len(pieces) == 6
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="no-such-model", prompt="x", max_tokens=1)

        if shutil.which("curl"):
            body = '{"model": "m-large", "prompt": "Hi", "max_tokens": 3, "stream": true}'
            url = f"http://127.0.0.1:{port}/v1/completions"
            curl = ["curl", "-sN", url, "-H", "Content-Type: application/json", "-d", body]
            text = subprocess.run(curl, capture_output=True, text=True, timeout=60, check=True).stdout
            assert text.count("data: ") >= 4 and text.strip().endswith("data: [DONE]")  # 3 tokens, [DONE]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130
        assert_all_gone(children)
    finally:
        stop(proc, children)
