"""The audit log counted by sender, verb and resource (e2e.harness.audit), on lines as the API server writes
them: the admin user's requests are told apart by their user agent, those outside the window are left out,
and a refusal shows its code."""

from __future__ import annotations

import json
from pathlib import Path

from e2e.harness.audit import ADMIN, HARNESS_AGENT, count_requests, table


def event(user: str, agent: str, verb: str, resource: str, at: str, code: int = 200, sub: str = "") -> str:
    ref = {"resource": resource, **({"subresource": sub} if sub else {})}
    return json.dumps(
        {
            "user": {"username": user},
            "userAgent": agent,
            "verb": verb,
            "objectRef": ref,
            "requestReceivedTimestamp": at,
            "responseStatus": {"code": code},
        }
    )


def test_requests_are_counted_by_sender_in_the_window(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    inside, outside = "2026-01-01T00:00:10.5Z", "2026-01-01T00:01:00.000000Z"
    lines = [
        event(ADMIN, "kopf/1.45.2", "patch", "modeldeployments", inside, sub="status"),
        event(ADMIN, "kopf/1.45.2", "patch", "modeldeployments", inside, sub="status"),
        event(ADMIN, "kopf/1.45.2", "patch", "modeldeployments", inside, code=422),
        event(ADMIN, "OpenAPI-Generator/35.0.0/python", "create", "events", inside),
        event(ADMIN, HARNESS_AGENT, "patch", "pods", inside, sub="status"),
        event(ADMIN, "bench", "list", "modeldeployments", inside),
        event(
            "system:serviceaccount:ns:warmserve-worker-p", "Python/3.11 aiohttp/3", "patch", "pods", inside
        ),
        event("system:serviceaccount:kube-system:generic-gc", "kcm", "get", "modeldeployments", inside),
        event(ADMIN, "bench", "list", "modeldeployments", outside),
    ]
    log.write_text("\n".join(lines) + "\n")
    counts = count_requests(log, since=1767225600.0, until=1767225630.0)  # 00:00:00 to 00:00:30
    assert counts == {
        ("operator (kopf)", "patch", "modeldeployments", "status"): 2,
        ("operator (kopf)", "patch", "modeldeployments", " (422)"): 1,
        ("operator (client)", "create", "events", ""): 1,
        ("node agent", "patch", "pods", "status"): 1,
        ("bench", "list", "modeldeployments", ""): 1,
        ("workers", "patch", "pods", ""): 1,
        ("controller-manager", "get", "modeldeployments", ""): 1,
    }
    printed = table(counts, top=2)
    assert "modeldeployments/status" in printed[1] and "modeldeployments (422)" in printed[2]
    assert printed[-2].startswith("    per sender: operator (kopf) 3,") and printed[-1] == "    total: 8"
