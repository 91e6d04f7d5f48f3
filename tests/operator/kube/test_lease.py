"""The Lease elector (``warmserve.operator.kube.lease``) against the test control plane's real API server:
a write carrying a stale resourceVersion is refused (of two candidates claiming at once, the second loses);
of two electors one leads and the other waits as a ready standby; the leader's work ending releases the
Lease and the standby takes it at once; a leader whose Lease another took has its work cancelled at once
and raises UnavailableError. Short leases (2 s) keep it quick."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import kubernetes
import pytest

from e2e.harness.cluster import Cluster
from warmserve.operator.health import Pulse, unready
from warmserve.operator.kube.lease import LeaseElector, lease_record, read_lease, version, write_lease
from warmserve.operator.leadership import LeaseRecord, Timing
from warmserve.protocol.errors import UnavailableError

pytestmark = [pytest.mark.kube]
NAME = "warmserve-operator"
TIMING = Timing(2)


@pytest.fixture
def api(kube_cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    with kube_cluster.api_client() as client:
        yield client


def candidate(api: kubernetes.client.ApiClient, namespace: str, me: str) -> tuple[LeaseElector, Pulse]:
    pulse = Pulse(time.monotonic(), TIMING.retry_s, TIMING.duration_s, 1.0)
    return LeaseElector(api, namespace, NAME, TIMING, pulse, me), pulse


def holder(api: kubernetes.client.ApiClient, namespace: str) -> LeaseRecord:
    lease = read_lease(kubernetes.client.CustomObjectsApi(api), namespace, NAME, 5.0)
    assert lease is not None
    return lease_record(lease)


async def until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_a_write_of_a_version_changed_since_is_refused(
    api: kubernetes.client.ApiClient, kube_namespace: str
) -> None:
    leases = kubernetes.client.CustomObjectsApi(api)
    now = datetime.now(UTC).replace(microsecond=0)  # MicroTime's fraction written even when it is zero
    created = write_lease(leases, kube_namespace, NAME, LeaseRecord("a", 2, now, now, 0), None, 5.0)
    with pytest.raises(kubernetes.client.ApiException) as twice:
        write_lease(leases, kube_namespace, NAME, LeaseRecord("b", 2, now, now, 0), None, 5.0)
    assert twice.value.status == 409
    read = version(created)
    write_lease(leases, kube_namespace, NAME, LeaseRecord("b", 2, now, now, 1), read, 5.0)
    with pytest.raises(kubernetes.client.ApiException) as stale:
        write_lease(leases, kube_namespace, NAME, LeaseRecord("c", 2, now, now, 1), read, 5.0)
    assert stale.value.status == 409
    assert holder(api, kube_namespace) == LeaseRecord("b", 2, now, now, 1)


async def test_one_leads_the_other_waits_ready_and_takes_over_when_the_lease_is_released(
    api: kubernetes.client.ApiClient, kube_namespace: str
) -> None:
    (a, a_pulse), (b, b_pulse) = (candidate(api, kube_namespace, me) for me in ("a", "b"))
    done_a, stop = asyncio.Event(), asyncio.Event()
    b_leads = asyncio.Event()
    task_a = asyncio.create_task(a.lead(done_a.wait, stop))
    await until("a leading", lambda: a_pulse.leading, 10)
    task_b = asyncio.create_task(b.lead(b_leads.wait, stop))
    await until("b's first round", lambda: b_pulse.lease_contact is not None, 10)
    await asyncio.sleep(1.5 * TIMING.duration_s)  # b waits even though a's renewals come and go
    assert not b_pulse.leading and unready(b_pulse, time.monotonic()) is None  # a ready standby
    record = holder(api, kube_namespace)
    assert (record.holder, record.transitions, record.duration_s) == ("a", 0, 2)
    assert record.renewed is not None and record.acquired is not None and record.renewed > record.acquired

    done_a.set()  # a's work ends: a releases, and b takes the lease without waiting out its duration
    await task_a
    started = time.monotonic()
    await until("b leading", lambda: b_pulse.leading, 10)
    assert time.monotonic() - started < TIMING.duration_s
    assert (holder(api, kube_namespace).holder, holder(api, kube_namespace).transitions) == ("b", 1)
    stop.set()
    b_leads.set()
    await task_b


async def test_a_leader_whose_lease_another_took_stops_its_work_at_once(
    api: kubernetes.client.ApiClient, kube_namespace: str
) -> None:
    a, a_pulse = candidate(api, kube_namespace, "a")
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(a.lead(work, asyncio.Event()))
    await until("a leading", lambda: a_pulse.leading, 10)
    leases = kubernetes.client.CustomObjectsApi(api)
    lease = read_lease(leases, kube_namespace, NAME, 5.0)
    assert lease is not None
    now = datetime.now(UTC)
    taken = LeaseRecord("intruder", 60, now, now, lease_record(lease).transitions + 1)
    write_lease(leases, kube_namespace, NAME, taken, version(lease), 5.0)
    started = time.monotonic()
    with pytest.raises(UnavailableError, match=r"lost the Lease .*: 'intruder' holds it"):
        await asyncio.wait_for(task, 10)
    assert cancelled.is_set() and not a_pulse.leading
    assert time.monotonic() - started <= 2 * TIMING.retry_s + 1.0
