"""Leader election on a real Lease: one leader, fast takeover, immediate stop on loss."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from fixtures.samples import widget
from kokpit.local import LocalCluster
from kokpit.runtime import (
    Client,
    ClientConfig,
    Controller,
    LeaderElectionConfig,
    LeaderElector,
    LeadershipLost,
    Manager,
    ManagerOptions,
    Request,
    Resource,
    Result,
)
from kokpit.runtime.resources import LEASES

# Shorter than the production defaults (15/10/2) to keep the test quick; same algorithm.
LEASE, RENEW, RETRY = 6.0, 4.0, 1.0


def config(namespace: str, identity: str) -> LeaderElectionConfig:
    # release_on_cancel=False: cancelling a candidate is then exactly a kill -9.
    return LeaderElectionConfig(
        namespace, "the-lease", identity, LEASE, RENEW, RETRY, release_on_cancel=False
    )


@pytest.fixture
async def clients(local_cluster: LocalCluster) -> AsyncIterator[list[Client]]:
    config = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    async with Client(config) as a, Client(config) as b:
        yield [a, b]


async def test_one_leader_and_takeover_within_the_lease(
    clients: list[Client], namespace: str
) -> None:
    leading: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}
    electors = {
        n: LeaderElector(c, config(namespace, n)) for n, c in zip("ab", clients, strict=True)
    }

    def work(name: str):  # type: ignore[no-untyped-def]
        async def lead() -> None:
            leading[name].set()
            await asyncio.Event().wait()

        return lead

    tasks = {n: asyncio.create_task(e.run(work(n))) for n, e in electors.items()}
    try:
        done, _ = await asyncio.wait(
            [asyncio.create_task(ev.wait()) for ev in leading.values()],
            timeout=20,
            return_when=asyncio.FIRST_COMPLETED,
        )
        assert done, "someone became leader"
        await asyncio.sleep(2 * RETRY + 1)
        leaders = [n for n, e in electors.items() if e.is_leader]
        assert len(leaders) == 1, f"exactly one leader, got {leaders}"
        (leader,) = leaders
        follower = "b" if leader == "a" else "a"
        assert not leading[follower].is_set()

        killed_at = time.monotonic()
        tasks[leader].cancel()  # the leader dies without releasing the lease
        await asyncio.wait_for(leading[follower].wait(), LEASE + 3 * RETRY)
        takeover = time.monotonic() - killed_at
        print(f"takeover after the leader died: {takeover:.1f} s (lease {LEASE:.0f} s)")
        assert takeover <= LEASE + 2 * RETRY + 1, f"took over in {takeover:.1f} s"
        lease = await clients[0].get(LEASES, "the-lease", namespace=namespace)
        assert lease["spec"]["holderIdentity"] == follower
        assert lease["spec"]["leaseTransitions"] >= 1
    finally:
        for t in tasks.values():
            t.cancel()


async def test_a_leader_that_cannot_renew_stops_at_once(
    clients: list[Client], namespace: str
) -> None:
    elector = LeaderElector(clients[0], config(namespace, "a"))
    stopped = asyncio.Event()

    async def lead() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    task = asyncio.create_task(elector.run(lead))
    for _ in range(100):
        if elector.is_leader:
            break
        await asyncio.sleep(0.1)
    assert elector.is_leader

    # Someone else holds the lease now (an operator's manual takeover, or a split brain).
    lease = await clients[1].get(LEASES, "the-lease", namespace=namespace)
    lease["spec"]["holderIdentity"] = "thief"
    await clients[1].replace(LEASES, lease)
    stolen_at = time.monotonic()
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(task, RENEW + 3 * RETRY)
    assert stopped.is_set(), "the leader's work was cancelled"
    assert not leads(elector)
    assert time.monotonic() - stolen_at <= RENEW + 2 * RETRY + 0.5


def leads(elector: LeaderElector) -> bool:
    return elector.is_leader


def test_defaults_are_client_gos() -> None:
    c = LeaderElectionConfig("ns", "name", "me")
    assert (c.lease_duration, c.renew_deadline, c.retry_period) == (15.0, 10.0, 2.0)
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElectionConfig("ns", "n", "me", lease_duration=5, renew_deadline=10)


class Recording:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def reconcile(self, request: Request) -> Result:
        self.seen.append(request.name)
        return Result()


async def test_only_the_leading_manager_reconciles(
    clients: list[Client], namespace: str, widget_crd: Resource
) -> None:
    replicas = []
    for name, client in zip("ab", clients, strict=True):
        manager = Manager(
            client, ManagerOptions(leader_election=config(namespace, name), health_port=None)
        )
        informer = manager.cache.informer(widget_crd, namespace=namespace)
        recording = Recording()
        manager.add(Controller(f"replica-{name}-{namespace}", recording).watch(informer))
        replicas.append((manager, recording, asyncio.create_task(manager.start())))
    try:
        await clients[0].create(widget_crd, widget(namespace, "first"))
        for _ in range(200):
            if any(r.seen for _, r, _ in replicas):
                break
            await asyncio.sleep(0.1)
        leading = [i for i, (m, _, _) in enumerate(replicas) if m.is_leader]
        assert len(leading) == 1
        leader, follower = replicas[leading[0]], replicas[1 - leading[0]]
        assert leader[1].seen == ["first"]
        assert follower[1].seen == [], "the follower's controller never ran"

        leader[2].cancel()  # the leading replica dies
        await clients[1].create(widget_crd, widget(namespace, "second"))
        for _ in range(int((LEASE + 4 * RETRY) * 10)):
            if "second" in follower[1].seen:
                break
            await asyncio.sleep(0.1)
        assert "second" in follower[1].seen, "the new leader reconciles"
        assert "first" in follower[1].seen, "starting from the full cache, not from events"
    finally:
        for _, _, task in replicas:
            task.cancel()
