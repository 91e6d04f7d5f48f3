"""What the test control plane's API server was asked, and by whom: its audit log, counted
(docs/test-cluster.md, "Request accounting").

A cluster started with ``start_cluster(audit=True)`` logs one audit event per request (``Metadata`` level,
at the ``ResponseComplete`` stage only: a watch is counted when it ends) to ``<workdir>/audit.log``.
:func:`count_requests` reads the events received in a time window and counts them by sender, verb, resource
and subresource; the sender is told by the user name and, for the admin user that several clients share, by
the user agent (:func:`sender`). These counts do not depend on how loaded the machine is, unlike timings.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

#: Every request at Metadata level, once (no request or response bodies, no per-stage repeats).
POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
- level: Metadata
"""
#: The user agent the harness's own admin clients send (the node agent, and tests unless they set theirs).
HARNESS_AGENT = "warmserve-harness"
#: The admin certificate's user name (e2e.harness.certs).
ADMIN = "warmserve-test-admin"

#: One kind of request: sender, verb, resource, subresource ("" for none; a response code other than 2xx
#: follows it in parentheses).
Kind = tuple[str, str, str, str]


def audit_flags(workdir: Path) -> list[str]:
    """The kube-apiserver flags that log every request to ``<workdir>/audit.log`` (the policy written
    beside it)."""
    policy = workdir / "audit-policy.yaml"
    policy.write_text(POLICY)
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={workdir / 'audit.log'}",
        "--audit-log-format=json",
        "--audit-log-maxsize=0",
    ]


def sender(user: str, agent: str) -> str:
    """Who sent a request, from its user name and user agent: the workers and the control plane's own
    components have identities of their own; the admin user is shared by the operator (kopf's watches
    and patches send ``kopf/...``, its Kubernetes client the default agent), the node agent and tests
    (:data:`HARNESS_AGENT`) and whoever sets an agent of its own (its first word is the sender)."""
    if user.startswith("system:serviceaccount:kube-system:") or user == "system:kube-controller-manager":
        return "controller-manager"
    if user.startswith("system:serviceaccount:"):
        return "workers"
    if user == "system:kube-scheduler":
        return "kube-scheduler"
    if user != ADMIN:
        return user
    if agent.startswith("kopf/"):
        return "operator (kopf)"
    if agent.startswith(HARNESS_AGENT):
        return "node agent"
    if agent.startswith("OpenAPI-Generator/"):
        return "operator (client)"
    return agent.split("/")[0].split(" ")[0]


def count_requests(log: Path, since: float, until: float) -> Counter[Kind]:
    """Requests the API server received between epoch seconds ``since`` and ``until``, by kind. Raises
    :class:`FileNotFoundError` if the cluster was not started with the audit log."""
    counts: Counter[Kind] = Counter()
    with log.open() as lines:
        for line in lines:
            event = json.loads(line)
            received = _epoch(event["requestReceivedTimestamp"])
            if since <= received <= until:
                counts[_kind(event)] += 1
    return counts


def _kind(event: Mapping[str, Any]) -> Kind:
    ref = event.get("objectRef") or {}
    who = sender(event.get("user", {}).get("username", ""), event.get("userAgent", ""))
    code = int((event.get("responseStatus") or {}).get("code", 200))
    sub = ref.get("subresource", "") + (f" ({code})" if code >= 300 else "")
    return who, event.get("verb", ""), ref.get("resource", event.get("requestURI", "")), sub


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def table(counts: Counter[Kind], top: int = 15) -> list[str]:
    """The ``top`` kinds of request, most first, then the total per sender: lines to print."""
    lines = [f"    {'count':>6}  {'sender':<20} {'verb':<7} resource"]
    for (who, verb, resource, sub), n in counts.most_common(top):
        lines.append(
            f"    {n:>6}  {who:<20} {verb:<7} {resource}{'/' if sub[:1] not in ('', ' ') else ''}{sub}"
        )
    by_sender: Counter[str] = Counter()
    for (who, *_), n in counts.items():
        by_sender[who] += n
    lines.append("    per sender: " + ", ".join(f"{who} {n}" for who, n in by_sender.most_common()))
    lines.append(f"    total: {sum(counts.values())}")
    return lines
