"""The guard against the real API server: budgets that hold across processes, a breaker that
stays open until a person resets it, a lost ledger that fails closed, policies the API server
refuses. The guard runs with the permissions of config/rbac/guard-client.yaml."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kokpit.api.v1alpha1 import MACHINES, RISK_LEDGERS, RISK_POLICIES
from kokpit.api.v1alpha1.riskpolicy import RESET_ANNOTATION
from kokpit.local import Kubectl, KubectlError, LocalCluster
from kokpit.providers.guard import RiskRequest
from kokpit.providers.guard.health import MachineHealth
from kokpit.providers.guard.local import LocalGuard
from kokpit.runtime import Cache, Client, ClientConfig, EventRecorder, NotFound, Resource
from kokpit.runtime.resources import EVENTS
from kokpit.runtime.store import Store
from tests.e2e.operators import write_kubeconfig
from tests.e2e.rbac import apply_rbac, service_account
from tests.e2e.support import until

Object = dict[str, Any]
ROOT = Path(__file__).parents[3]
ASKER = "kokpit-guard-e2e"


@pytest.fixture
def guard_identity(
    kubectl: Kubectl, local_cluster: LocalCluster, kokpit_crds: None
) -> ClientConfig:
    """A service account bound to exactly kokpit-guard-client (and its Events Role)."""
    apply_rbac(kubectl, "guard-client")
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    identity = service_account(kubectl, admin, "kokpit-system", ASKER)
    subject = [{"kind": "ServiceAccount", "name": ASKER, "namespace": "kokpit-system"}]
    kubectl.apply(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": ASKER},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "kokpit-guard-client",
                },
                "subjects": subject,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": ASKER, "namespace": "default"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "kokpit-guard-client-events",
                },
                "subjects": subject,
            },
        ]
    )
    return identity


@dataclass
class Asking:
    """The guard in this process, as an operator holds it, and the policies it sees."""

    guard: LocalGuard
    policies: Store

    async def sees(self, name: str, check: Callable[[Object], bool]) -> None:
        async def seen() -> bool:
            obj = self.policies.get(name)
            return obj is not None and check(obj)

        await until(f"the guard's view of policy {name}", seen, 30)


async def remove_policies(client: Client) -> None:
    for resource in (RISK_POLICIES, RISK_LEDGERS):
        for obj in (await client.list(resource)).items:
            with contextlib.suppress(NotFound):  # a ledger goes with its policy
                await client.delete(resource, obj["metadata"]["name"])


@pytest.fixture
async def asking(guard_identity: ClientConfig, client: Client) -> AsyncIterator[Asking]:
    """The guard, and no RiskPolicy but the test's own, before and after it (policies are
    cluster-wide: one left behind would hold the actions of other tests' operators)."""
    await remove_policies(client)
    async with Client(guard_identity) as own:
        cache = Cache(own)
        recorder = EventRecorder(own, "kokpit.io/guard-e2e", "test", min_update_interval=0)
        guard = LocalGuard.on(cache, "e2e", recorder=recorder)
        task = asyncio.create_task(cache.start())
        await cache.wait_synced()
        try:
            yield Asking(guard, cache.informer(RISK_POLICIES).store)
        finally:
            await recorder.close()
            await remove_policies(client)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def policy(name: str, **spec: Any) -> Object:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "RiskPolicy",
        "metadata": {"name": name},
        "spec": {"actions": ["NodeDelete"], **spec},
    }


async def created(client: Client, asking: Asking, obj: Object) -> Object:
    """Create a policy (each test's own name) and wait until the guard's informer has it."""
    made = await client.create(RISK_POLICIES, obj)
    await asking.sees(
        made["metadata"]["name"], lambda o: o["metadata"]["uid"] == made["metadata"]["uid"]
    )
    return made


async def gone(client: Client, resource: Resource, name: str) -> bool:
    try:
        await client.get(resource, name)
    except NotFound:
        return True
    return False


def reset_seen(policy: Object) -> bool:
    return RESET_ANNOTATION in (policy["metadata"].get("annotations") or {})


def ask(n: int | str, action: str = "NodeDelete") -> RiskRequest:
    return RiskRequest(action, f"ask-{n}", f"Machine e2e/m{n}")  # type: ignore[arg-type]


def kokpit(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kokpit", "risk", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_five_deletions_per_ten_minutes_hold_across_two_processes_asking_at_once(
    client: Client, asking: Asking, guard_identity: ClientConfig, tmp_path: Path
) -> None:
    await created(client, asking, policy("deletions", rateLimit={"count": 5, "windowSeconds": 600}))
    kubeconfig = write_kubeconfig(guard_identity, tmp_path / "asker.kubeconfig")
    askers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "tests.e2e.guard_asker", str(kubeconfig), "NodeDelete", prefix, "60"),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for prefix in ("a", "b")
    ]
    results = []
    for process in askers:
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, err.decode()
        results.append(json.loads(out))
    allowed = [i for r in results for i in r["allowed"]]
    assert len(allowed) == 5, results
    denials = {reason for r in results for reason in r["reasons"]}
    assert any("rate limit: 5 of 5 grants in the last 600s" in d for d in denials), denials
    ledger = await client.get(RISK_LEDGERS, "deletions")
    (scope,) = ledger["status"]["scopes"]
    assert len(scope["grants"]) == 5
    assert sorted(h["id"] for h in scope["inFlight"]) == sorted(allowed)
    # Every decision is on record: the ledger's last ones, and an Event each.
    decisions = ledger["status"]["decisions"]
    assert len(decisions) == 50
    assert {d["requester"] for d in decisions} <= {"asker-a", "asker-b"}
    events = (await client.list(EVENTS, namespace="default")).items
    mine = [e for e in events if e["regarding"]["name"] == "deletions"]
    assert sum(e["reason"] == "Allowed" for e in mine) == 5
    assert any(e["reason"] == "Denied" for e in mine)


async def test_a_breaker_opens_after_three_failures_and_stays_open_until_a_person_resets_it(
    client: Client, asking: Asking, local_cluster: LocalCluster
) -> None:
    guard = asking.guard
    await created(
        client, asking, policy("reboots", breaker={"maxFailures": 3, "windowSeconds": 3600})
    )
    for n in range(3):
        assert (await guard.acquire(ask(n))).allowed
        await guard.release(ask(n), "Failed")
    denied = await guard.acquire(ask(3))
    assert not denied.allowed
    assert "breaker is open" in denied.reason
    assert "3 failures within 3600s" in denied.reason
    await asyncio.sleep(2)
    assert not (await guard.acquire(ask(3))).allowed, "it stays open"
    status = kokpit(local_cluster.kubeconfig, "status", "reboots")
    assert status.returncode == 0, status.stderr
    assert "Open" in status.stdout
    assert "DENIED" in status.stdout
    reset = kokpit(local_cluster.kubeconfig, "reset", "reboots")
    assert reset.returncode == 0, reset.stderr
    await asking.sees("reboots", reset_seen)
    assert (await guard.acquire(ask(3))).allowed
    ledger = await client.get(RISK_LEDGERS, "reboots")
    assert ledger["status"]["scopes"][0]["breaker"]["state"] == "Closed"


async def test_a_lost_or_foreign_ledger_fails_closed_until_a_person_resets_the_policy(
    client: Client, asking: Asking, local_cluster: LocalCluster, kubectl: Kubectl
) -> None:
    guard = asking.guard
    made = await created(client, asking, policy("drains", maxInFlight=10))
    assert (await guard.acquire(ask(1))).allowed
    ledger = await client.get(RISK_LEDGERS, "drains")
    assert ledger["metadata"]["ownerReferences"][0]["uid"] == made["metadata"]["uid"]
    await client.delete(RISK_LEDGERS, "drains")
    await until("the ledger gone", lambda: gone(client, RISK_LEDGERS, "drains"), 30)
    denied = await guard.acquire(ask(2))
    assert not denied.allowed
    assert "RiskLedger drains was deleted" in denied.reason
    assert "kokpit risk reset drains" in denied.reason
    status = kokpit(local_cluster.kubeconfig, "status")
    assert "LOST: reset needed" in status.stdout

    assert kokpit(local_cluster.kubeconfig, "reset", "drains").returncode == 0
    await asking.sees("drains", reset_seen)
    assert (await guard.acquire(ask(2))).allowed, "a new ledger after the reset"

    # A ledger planted for another policy of the same name is not used.
    await client.delete(RISK_LEDGERS, "drains")
    await until("the ledger gone", lambda: gone(client, RISK_LEDGERS, "drains"), 30)
    kubectl.apply(
        [
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "RiskLedger",
                "metadata": {"name": "drains"},
                "spec": {"policyUID": "not-the-policy"},
            }
        ]
    )
    foreign = await guard.acquire(ask(3))
    assert not foreign.allowed
    assert "belongs to another policy" in foreign.reason


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"scope": "FailureDomain", "maxInFlight": 1},
            "scope FailureDomain needs spec.domainLabel",
        ),
        ({"adaptive": {"healthySeconds": 60}}, "spec.adaptive needs spec.maxInFlight"),
        ({}, "a policy needs at least one of rateLimit, maxInFlight"),
        ({"maxInFlight": 1, "actions": ["Format"]}, "Unsupported value"),
    ],
)
def test_the_api_server_refuses_a_policy_that_cannot_work(
    kubectl: Kubectl, kokpit_crds: None, spec: Object, message: str
) -> None:
    body = policy("refused")
    body["spec"] |= spec
    with pytest.raises(KubectlError) as refused:
        kubectl.apply([body])
    assert message in refused.value.stderr


async def test_max_unavailable_counts_the_clusters_machines_that_are_not_ready(
    client: Client, asking: Asking, namespace: str, local_cluster: LocalCluster
) -> None:
    """Four Machines of one Cluster, one not Ready: under 50 % unavailable one more node may
    go (2 of 4), a second may not (3 of 4). (This guard reads Machines as the operators that
    count them do; it runs with the admin's credentials, guard-client.yaml has no Machines.)"""
    for n in range(4):
        await client.create(
            MACHINES,
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "Machine",
                "metadata": {"name": f"m{n}", "namespace": namespace},
                "spec": {
                    "clusterRef": {"name": "prod"},
                    "packageVersion": "pv",
                    "executor": "sim",
                    "address": "10.0.0.1",
                },
            },
        )
        ready = "False" if n == 0 else "True"
        condition = {"type": "Ready", "status": ready, "reason": "Test", "message": ""}
        condition["lastTransitionTime"] = "2026-01-01T00:00:00Z"
        await client.patch(
            MACHINES,
            f"m{n}",
            {"status": {"conditions": [condition]}},
            namespace=namespace,
            subresource="status",
        )
    await created(client, asking, policy("domain", scope="Cluster", maxUnavailablePercent=50))
    async with Client(ClientConfig.from_kubeconfig(local_cluster.kubeconfig)) as own:
        cache = Cache(own)
        machines = cache.informer(MACHINES)
        guard = LocalGuard.on(cache, "e2e", health=MachineHealth(machines.store))
        task = asyncio.create_task(cache.start())
        try:
            await cache.wait_synced()
            cluster = f"{namespace}/prod"
            first = await guard.acquire(RiskRequest("NodeDelete", "a", "Machine m1", cluster))
            assert first.allowed, first.reason
            second = await guard.acquire(RiskRequest("NodeDelete", "b", "Machine m2", cluster))
            assert not second.allowed
            assert "3 of 4 nodes would be unavailable, more than 50%" in second.reason
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
