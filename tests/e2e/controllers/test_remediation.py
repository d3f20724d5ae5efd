"""The Remediation operator against the real meta-cluster, a real business cluster (process
runtime: a real kube-apiserver, controller-manager and scheduler; KWOK plays the kubelets) and
real sshd hosts whose restart and reboot steps append to files on the host, so a count
survives the operator's death.

The operator runs as a process of its own (``kokpit operator remediation``), SIGKILLed in two
tests: mid-drain and during a reboot. Faults come as node-problem-detector reports them (a
KernelDeadlock condition on the Node), and the fault hub in the same process records them.
Machines' Nodes are registered as the Machine-Operator registers KWOK nodes; no
Machine-Operator runs.

The operator runs with exactly the permissions of ``config/rbac/remediation-operator.yaml``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.business import BusinessCluster
from kokpit.api.v1alpha1 import (
    MACHINES,
    NODE_FAULTS,
    REMEDIATION_POLICIES,
    REMEDIATIONS,
    RISK_LEDGERS,
    RISK_POLICIES,
)
from kokpit.api.v1alpha1.remediation import CORDONED_BY
from kokpit.local import Kubectl, LocalCluster
from kokpit.providers.machine.kubelet import KwokKubelet, Registration
from kokpit.providers.machine.sshd import SimulatedHost
from kokpit.runtime import Client, ClientConfig
from kokpit.runtime.resources import NODES, PODS, SECRETS
from tests.e2e.controllers.remediations import (
    Faults,
    condition,
    phase_is,
    unschedulable,
)
from tests.e2e.operators import OperatorProcess, api_seconds, operator_process, write_kubeconfig
from tests.e2e.rbac import operator_identity
from tests.e2e.support import until

pytestmark = pytest.mark.usefixtures("kokpit_crds")
NS = "remediation-e2e"
#: Its node faults and remediations.
faults = Faults(NS)
#: The node label naming each test's failure domain (the policies' stormStop.scopeLabel), so
#: one test's faulty nodes never count in another's storm.
DOMAIN = "kokpit.io/e2e-domain"
#: The Machine label each test's policy selects.
TEST = "kokpit.io/e2e-test"
Object = dict[str, Any]

#: What the Remediation operator may do in the meta-cluster, each with why.
# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def identity(kubectl: Kubectl, local_cluster: LocalCluster, biz: BusinessCluster) -> ClientConfig:
    """The operator's service account with exactly config/rbac/remediation-operator.yaml."""
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    return operator_identity(kubectl, admin, "remediation-operator", [NS])


@pytest.fixture
async def operator(identity: ClientConfig, tmp_path: Path) -> AsyncIterator[OperatorProcess]:
    kubeconfig = write_kubeconfig(identity, tmp_path / "remediation-operator.kubeconfig")
    args = ["--executors", "ssh,sim", "--admission-delay", "1"]
    with operator_process("remediation", kubeconfig, tmp_path / "operator.log", args) as op:
        await op.start()
        yield op


@pytest.fixture
async def business(biz: BusinessCluster) -> AsyncIterator[Client]:
    async with Client(ClientConfig.from_kubeconfig(biz.kubeconfig)) as c:
        yield c


@pytest.fixture
def hosts(ssh_hosts: list[SimulatedHost]) -> list[SimulatedHost]:
    """The session's sshd hosts, running, with empty roots."""
    for host in ssh_hosts:
        host.start()
        subprocess.run(["rm", "-rf", "--", *map(str, host.root.iterdir())], check=True)
    return ssh_hosts


# -- the world as the fault hub and the Machine-Operator would leave it ---------------------


def records(host: SimulatedHost, what: str) -> list[str]:
    """The lines of ``var/lib/kokpit/<what>.log`` on the host (reboots, restarts)."""
    path = host.root / "var/lib/kokpit" / f"{what}.log"
    return path.read_text().splitlines() if path.exists() else []


RESTART_LOG = '"$KOKPIT_ROOT/var/lib/kokpit/restarts.log"'


def package_version(name: str, restart: str) -> Object:
    """A kubelet package whose restart step records itself on the host, then runs
    ``restart``."""
    record = (
        f'mkdir -p "$KOKPIT_ROOT/var/lib/kokpit"\necho "restart $(date +%s.%N)" >> {RESTART_LOG}'
    )
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "MachinePackageVersion",
        "metadata": {"name": name},
        "spec": {
            "packages": [
                {
                    "name": "kubelet",
                    "kind": "Kubelet",
                    "version": "1",
                    "install": {
                        "script": {
                            "check": {"run": "true"},
                            "install": {"run": "true"},
                            "restart": {"run": f"{record}\n{restart}"},
                        }
                    },
                }
            ]
        },
    }


def policy(name: str, steps: list[Object], **spec: Any) -> Object:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "RemediationPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "machineSelector": {"matchLabels": {TEST: name}},
            "faultTypes": ["KernelDeadlock"],
            "steps": steps,
            "recoverySeconds": 1,
            "stormStop": {"scopeLabel": DOMAIN, "minHealthyPercent": 50, "maxConcurrent": 5},
            **spec,
        },
    }


async def add_machine(
    client: Client,
    business: Client,
    name: str,
    test: str,
    host: SimulatedHost | None = None,
    package_version: str = "rem-ok",
) -> None:
    """A Machine with its Node Ready in the business cluster (in the failure domain ``test``),
    as the Machine-Operator leaves one."""
    spec: Object = {"clusterRef": {"name": "biz"}, "packageVersion": package_version}
    if host is None:
        spec |= {"executor": "sim", "address": "10.0.0.1"}
    else:
        await client.apply(SECRETS, host.ssh_secret(NS, name), field_manager="test")
        spec |= {"address": host.address, "port": host.port, "sshSecretRef": {"name": name}}
    meta = {"name": name, "namespace": NS, "labels": {TEST: test}}
    await client.create(
        MACHINES,
        {"apiVersion": "kokpit.io/v1alpha1", "kind": "Machine", "metadata": meta, "spec": spec},
    )
    await client.patch(
        MACHINES, name, {"status": {"nodeName": name}}, namespace=NS, subresource="status"
    )
    await KwokKubelet().register(
        business, Registration(name, f"{NS}/{name}", spec["address"], labels={DOMAIN: test})
    )

    async def ready() -> bool:
        node = await business.get(NODES, name)
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions") or []
        )

    await until(f"node {name} Ready", ready, 60)


def kokpit_cli(kubeconfig: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "kokpit", "remediation", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


@pytest.fixture(scope="module")
def package_versions(kubectl: Kubectl, kokpit_crds: None) -> None:
    kubectl.apply(
        [
            package_version("rem-ok", "true"),
            package_version("rem-broken", "echo 'kubelet will not restart' >&2\nexit 1"),
        ]
    )


# -- tests ----------------------------------------------------------------------------------


def workload(domain: str, node: str) -> list[Object]:
    """Three pods that may run on any node of ``domain``, a budget that lets none go, and a
    database pod on ``node`` that its own operator moves (annotation)."""
    labels = {"app": f"web-{domain}"}
    domain_only = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": DOMAIN, "operator": "In", "values": [domain]}]}
                ]
            }
        }
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"web-{domain}", "namespace": "default"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "affinity": domain_only,
                        "containers": [{"name": "c", "image": "busybox"}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"db-{domain}",
                "namespace": "default",
                "annotations": {"kokpit.io/migration": "operator"},
            },
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        },
    ]


def budget(domain: str, **spec: Any) -> Object:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"web-{domain}", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": f"web-{domain}"}}, **spec},
    }


async def test_one_fault_end_to_end_through_budgets_and_a_sigkill_mid_drain(
    operator: OperatorProcess,
    client: Client,
    business: Client,
    biz: BusinessCluster,
    hosts: list[SimulatedHost],
    package_versions: None,
) -> None:
    """Cordon → a budget that forbids eviction holds the drain (reported) → SIGKILL → the
    restarted operator meets it too → a partial budget lets the pods go one at a time, and the
    real scheduler places them on the other nodes → the pod its operator moves is left to it →
    repair (once) → verify → uncordon; every step in status and Events."""
    op, host, test = operator, hosts[0], "drain"
    faulty, others = "drain-a", ["drain-b", "drain-c"]
    await client.apply(
        REMEDIATION_POLICIES,
        policy(test, [{"action": "RestartKubelet", "timeoutSeconds": 120}]),
        field_manager="test",
    )
    await add_machine(client, business, faulty, test, host)
    for name in others:
        await add_machine(client, business, name, test)
    # The workload starts on the faulty node: the others are cordoned meanwhile.
    for name in others:
        await business.patch(NODES, name, {"spec": {"unschedulable": True}})
    biz.kubectl.apply(workload(test, faulty))

    async def web_pods() -> list[Object]:
        pods = await business.list(PODS, namespace="default", label_selector=f"app=web-{test}")
        return pods.items

    def running(pods: list[Object], node: str | None = None) -> list[Object]:
        return [
            p
            for p in pods
            if p.get("status", {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and (node is None or p["spec"].get("nodeName") == node)
        ]

    async def three_on_faulty() -> bool:
        return len(running(await web_pods(), faulty)) == 3

    await op.wait(three_on_faulty, "three web pods on the faulty node", 60)
    for name in others:
        await business.patch(NODES, name, {"spec": {"unschedulable": None}})
    biz.kubectl.apply([budget(test, minAvailable=3)])

    await faults.report(client, business, faulty)
    name = f"{faulty}.kerneldeadlock"
    held = faults.remediation_where(
        client,
        name,
        lambda o: (
            phase_is("Draining")(o)
            and (o["status"].get("drain") or {}).get("blockedBy") == [f"default/web-{test}"]
        ),
    )

    async def held_and_told() -> Object | None:
        """The drain is held and the Event saying so is out (Events follow the write)."""
        return await held() if "DrainBlocked" in await faults.reasons(client, name) else None

    blocked = await op.wait(held_and_told, "the drain to be held by the budget", 60)
    op.kill()
    killed = {e.get("reportingInstance") for e in await faults.events(client, name)}
    assert blocked["status"]["cordoned"] is True
    assert condition(blocked, "Drained")["reason"] == "DrainBlocked"
    assert await unschedulable(business, faulty)
    pods = await web_pods()
    assert len(running(pods, faulty)) == 3, "the budget was not forced"
    assert all(p["metadata"]["labels"].get("kokpit.io/migrate") == "true" for p in pods)
    await faults.saw(client, name, "Cordoned", "DrainBlocked")
    assert records(host, "restarts") == [], "no repair before the drain is done"

    await op.start()

    async def blocked_again() -> bool:
        """The fresh operator (an identity of its own in its Events) meets the budget too."""
        return any(
            e["reason"] == "DrainBlocked" and e.get("reportingInstance") not in killed
            for e in await faults.events(client, name)
        )

    await op.wait(blocked_again, "the restarted operator to meet the budget", 60)
    obj = await client.get(REMEDIATIONS, name, namespace=NS)
    assert obj["status"]["cordoned"] is True, "the restarted operator knows kokpit cordoned"
    assert len(running(await web_pods(), faulty)) == 3

    # A partial budget: one pod may be away at a time.
    biz.kubectl.run(
        "patch", "pdb", f"web-{test}", "-n", "default", "--type=merge",
        "-p", json.dumps({"spec": {"minAvailable": None, "maxUnavailable": 1}}),
    )  # fmt: skip
    fewest = 3
    deadline = time.monotonic() + 90
    while True:
        pods = await web_pods()
        fewest = min(fewest, len(running(pods)))
        if len(running(pods)) == 3 and not [p for p in pods if p["spec"].get("nodeName") == faulty]:
            break
        assert time.monotonic() < deadline, op.explain(f"the web pods never moved: {pods}")
        await asyncio.sleep(0.1)
    assert fewest >= 2, f"{3 - fewest} pods were away at once under maxUnavailable 1"
    placed = {p["spec"]["nodeName"] for p in running(await web_pods())}
    assert placed <= set(others), f"placed by the scheduler on {placed}"

    # The database pod is its own operator's to move: still there, labelled, waited for.
    db = await business.get(PODS, f"db-{test}", namespace="default")
    assert db["metadata"]["labels"]["kokpit.io/migrate"] == "true"
    assert not db["metadata"].get("deletionTimestamp")
    obj = await client.get(REMEDIATIONS, name, namespace=NS)
    assert obj["status"]["phase"] == "Draining", obj["status"]
    await business.delete(PODS, f"db-{test}", namespace="default", grace_period_seconds=0)

    verifying = await op.wait(
        faults.remediation_where(client, name, phase_is("Verifying")), "the repair to run", 60
    )
    assert [a["action"] for a in verifying["status"]["attempts"]] == ["RestartKubelet"]
    assert len(records(host, "restarts")) == 1
    await faults.clear(client, business, faulty)
    done = await op.wait(
        faults.remediation_where(client, name, phase_is("Succeeded")),
        "the remediation to succeed",
        60,
    )
    assert not await unschedulable(business, faulty), "uncordoned"
    assert done["status"]["cordoned"] is False
    assert done["status"]["attempts"][-1]["state"] == "Succeeded"
    assert len(records(host, "restarts")) == 1, "the restart ran once"
    assert {condition(done, t)["status"] for t in ("Drained", "Repaired")} == {"True"}
    assert condition(done, "Cordoned")["reason"] == "Uncordoned"
    await faults.saw(
        client,
        name,
        *("Admitted", "Cordoned", "DrainBlocked", "Drained", "RepairStarted"),
        *("Recovered", "Uncordoned", "Succeeded"),
    )
    fault = await client.get(NODE_FAULTS, name, namespace=NS)
    assert condition(fault, "Remediated")["status"] == "True"
    assert fault["status"]["remediation"] == name
    biz.kubectl.run("delete", "deployment,pdb", f"web-{test}", "-n", "default")


async def test_a_repair_that_keeps_failing_climbs_to_escalated_then_resume_and_close_work(
    operator: OperatorProcess,
    client: Client,
    business: Client,
    local_cluster: LocalCluster,
    hosts: list[SimulatedHost],
    package_versions: None,
) -> None:
    op, host, test = operator, hosts[1], "ladder"
    steps = [
        {"action": "RestartKubelet", "timeoutSeconds": 10},
        {"action": "Reboot", "timeoutSeconds": 10},
    ]
    await client.apply(REMEDIATION_POLICIES, policy(test, steps), field_manager="test")
    faulty = "ladder-a"
    await add_machine(client, business, faulty, test, host, package_version="rem-broken")
    for name in ("ladder-b", "ladder-c"):
        await add_machine(client, business, name, test)
    name = f"{faulty}.kerneldeadlock"

    # The same fault reported again and again (duplicates, flapping): one remediation.
    for count in range(1, 5):
        await faults.report(client, business, faulty, count)
    first = await op.wait(faults.remediation_where(client, name, bool), "a remediation", 30)
    for count in range(5, 8):
        await faults.report(client, business, faulty, count)

    escalated = await op.wait(
        faults.remediation_where(client, name, phase_is("Escalated")),
        "the ladder to be exhausted",
        60,
    )
    remediations = await client.list(REMEDIATIONS, namespace=NS)
    mine = [r for r in remediations.items if r["spec"]["machineRef"]["name"] == faulty]
    assert [r["metadata"]["uid"] for r in mine] == [first["metadata"]["uid"]]
    attempts = escalated["status"]["attempts"]
    assert [(a["action"], a["state"]) for a in attempts] == [
        ("RestartKubelet", "Failed"),
        ("Reboot", "TimedOut"),
    ]
    assert "kubelet will not restart" in attempts[0]["message"]
    assert condition(escalated, "Escalated")["status"] == "True"
    assert await unschedulable(business, faulty), "an escalated node stays cordoned"
    await faults.saw(client, name, "RepairFailed", "RepairTimedOut", "Escalated")
    fault = await client.get(NODE_FAULTS, name, namespace=NS)
    assert condition(fault, "Remediated")["reason"] == "Escalated"
    assert (len(records(host, "restarts")), len(records(host, "reboots"))) == (1, 1)

    # Nothing more is tried until a person acts.
    await asyncio.sleep(3)
    obj = await client.get(REMEDIATIONS, name, namespace=NS)
    assert obj["status"]["attempts"] == attempts
    assert (len(records(host, "restarts")), len(records(host, "reboots"))) == (1, 1)

    kubeconfig = local_cluster.kubeconfig
    kokpit_cli(kubeconfig, "resume", name, "-n", NS)

    async def climbing_again() -> Object | None:
        obj = await client.get(REMEDIATIONS, name, namespace=NS)
        annotations = obj["metadata"].get("annotations") or {}
        started = obj["status"]["attempts"][-1]
        if "kokpit.io/remediation-command" in annotations or len(records(host, "reboots")) < 2:
            return None
        return obj if (started["action"], started["state"]) == ("Reboot", "Started") else None

    resumed = await op.wait(climbing_again, "the ladder to be climbed again", 60)
    assert [a["action"] for a in resumed["status"]["attempts"]] == [
        "RestartKubelet",
        "Reboot",
        "RestartKubelet",
        "Reboot",
    ]
    assert len(records(host, "restarts")) == 2
    await faults.saw(client, name, "Resumed")

    kokpit_cli(kubeconfig, "close", name, "-n", NS)
    closed = await op.wait(
        faults.remediation_where(client, name, phase_is("Closed")), "the remediation to close", 60
    )
    assert not await unschedulable(business, faulty), "close uncordons what kokpit cordoned"
    assert closed["status"]["attempts"][-1]["state"] == "Failed"
    assert "kokpit.io/remediation-command" not in (closed["metadata"].get("annotations") or {})
    await faults.saw(client, name, "Closed")
    listing = kokpit_cli(kubeconfig, "list", "-n", NS)
    assert any(line.split()[1:2] == [name] and "Closed" in line for line in listing.splitlines())
    assert len(records(host, "reboots")) == 2


async def test_the_operator_sigkilled_during_a_reboot_never_reboots_again(
    operator: OperatorProcess,
    client: Client,
    business: Client,
    hosts: list[SimulatedHost],
    package_versions: None,
) -> None:
    op, host, test = operator, hosts[2], "reboot"
    await client.apply(
        REMEDIATION_POLICIES,
        policy(test, [{"action": "Reboot", "timeoutSeconds": 300}]),
        field_manager="test",
    )
    # Under the guard too: the reboot's grant must be held once, across the kill, and given
    # back once the node is back.
    risk = {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "RiskPolicy",
        "metadata": {"name": "reboots-in-flight"},
        "spec": {"actions": ["Reboot"], "maxInFlight": 5},
    }
    await client.create(RISK_POLICIES, risk)
    try:
        await _reboot_once_across_a_kill(op, client, business, host, test)
    finally:
        await client.delete(RISK_POLICIES, "reboots-in-flight")


async def _reboot_once_across_a_kill(
    op: OperatorProcess, client: Client, business: Client, host: SimulatedHost, test: str
) -> None:
    faulty = "reboot-a"
    await add_machine(client, business, faulty, test, host)
    for name in ("reboot-b", "reboot-c"):
        await add_machine(client, business, name, test)
    name = f"{faulty}.kerneldeadlock"
    await faults.report(client, business, faulty)

    async def rebooted() -> list[str]:
        return records(host, "reboots")

    # The risky moment: the host is rebooting (its record is written) and not yet back.
    [line] = await op.wait(rebooted, "the host to reboot", 60)
    op.kill()
    obj = await client.get(REMEDIATIONS, name, namespace=NS)
    [attempt] = obj["status"]["attempts"]
    assert (attempt["action"], attempt["state"]) == ("Reboot", "Started"), op.explain(str(obj))
    assert api_seconds(attempt["startedAt"]) <= float(line.split()[1]), "stored before it ran"

    await op.start()
    # The restarted operator waits for the node instead of rebooting it again.
    verifying = await op.wait(
        faults.remediation_where(client, name, phase_is("Verifying")),
        "verifying after the restart",
        30,
    )
    assert verifying["status"]["attempts"] == [attempt]
    await faults.clear(client, business, faulty)
    done = await op.wait(
        faults.remediation_where(client, name, phase_is("Succeeded")), "the node to recover", 60
    )
    assert records(host, "reboots") == [line], "the reboot ran once"
    assert done["status"]["attempts"][0]["state"] == "Succeeded"
    assert not await unschedulable(business, faulty)
    ledger = await client.get(RISK_LEDGERS, "reboots-in-flight")
    granted = [d for d in ledger["status"]["decisions"] if d["allowed"]]
    assert [d["id"] for d in granted] == [f"{obj['metadata']['uid']}/rung-0/try-0"], granted
    assert not any(s.get("inFlight") for s in ledger["status"].get("scopes") or [])


async def test_forty_percent_of_a_domain_faulty_at_once_is_a_storm_stop_with_no_repairs(
    operator: OperatorProcess,
    client: Client,
    business: Client,
    hosts: list[SimulatedHost],
    package_versions: None,
) -> None:
    op, test = operator, "storm"
    await client.apply(
        REMEDIATION_POLICIES,
        policy(
            test,
            [{"action": "Reboot", "timeoutSeconds": 120}],
            stormStop={"scopeLabel": DOMAIN, "minHealthyPercent": 70, "maxConcurrent": 5},
        ),
        field_manager="test",
    )
    faulty = {"storm-0": hosts[0], "storm-1": hosts[1]}
    for name, host in faulty.items():
        await add_machine(client, business, name, test, host)
    for i in range(2, 5):
        await add_machine(client, business, f"storm-{i}", test)

    await asyncio.gather(*(faults.report(client, business, name) for name in faulty))

    async def stopped() -> Object | None:
        obj = await client.get(REMEDIATION_POLICIES, test, namespace=NS)
        return obj if condition(obj, "StormStopped").get("status") == "True" else None

    policy_obj = await op.wait(stopped, "the storm stop", 30)
    message = condition(policy_obj, "StormStopped")["message"]
    assert f"{DOMAIN}={test} in Cluster {NS}/biz: 3 of 5 nodes healthy" in message, message
    await faults.saw(client, test, "StormStopped")
    # Held: for longer than the admission delay and several rechecks, nothing starts.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        for name, host in faulty.items():
            obj = await client.get(REMEDIATIONS, f"{name}.kerneldeadlock", namespace=NS)
            assert obj["status"]["phase"] == "Pending", obj["status"]
            assert not obj["status"].get("attempts")
            assert not await unschedulable(business, name)
            assert records(host, "reboots") == [], "a repair ran during the storm"
        await asyncio.sleep(0.5)

    # One fault clears by itself: 4 of 5 healthy, the storm is over, the other starts.
    await faults.clear(client, business, "storm-1")
    await op.wait(
        faults.remediation_where(client, "storm-1.kerneldeadlock", phase_is("Succeeded")),
        "the cleared fault's remediation to end",
        30,
    )
    await op.wait(
        faults.remediation_where(client, "storm-0.kerneldeadlock", phase_is("Verifying")),
        "the remaining remediation to start once the storm is over",
        60,
    )
    assert len(records(hosts[0], "reboots")) == 1
    assert records(hosts[1], "reboots") == []
    obj = await client.get(REMEDIATION_POLICIES, test, namespace=NS)
    assert condition(obj, "StormStopped")["status"] == "False"


async def test_a_reboot_the_guard_holds_back_waits_and_runs_once_the_first_is_done(
    operator: OperatorProcess,
    client: Client,
    business: Client,
    hosts: list[SimulatedHost],
    package_versions: None,
) -> None:
    """A RiskPolicy of one reboot in flight: of two faulty hosts one reboots, the other's
    remediation waits (Repaired=False GuardDenied, nothing run on its host) until the first
    reboot is reported done, then reboots."""
    op, test = operator, "guarded"
    await client.apply(
        REMEDIATION_POLICIES,
        policy(test, [{"action": "Reboot", "timeoutSeconds": 300}], recoverySeconds=3),
        field_manager="test",
    )
    risk = {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "RiskPolicy",
        "metadata": {"name": "one-reboot"},
        "spec": {"actions": ["Reboot"], "maxInFlight": 1},
    }
    await client.create(RISK_POLICIES, risk)
    try:
        faulty = {"guarded-a": hosts[0], "guarded-b": hosts[1]}
        for name, host in faulty.items():
            await add_machine(client, business, name, test, host)
        for i in range(3):
            await add_machine(client, business, f"guarded-{i}", test)
        await asyncio.gather(*(faults.report(client, business, name) for name in faulty))

        async def one_rebooted_one_held() -> tuple[str, str] | None:
            rebooted = [n for n, h in faulty.items() if records(h, "reboots")]
            for name in faulty:
                obj = await client.get(REMEDIATIONS, f"{name}.kerneldeadlock", namespace=NS)
                held = condition(obj, "Repaired").get("reason") == "GuardDenied"
                if held and len(rebooted) == 1 and rebooted[0] != name:
                    return rebooted[0], name
            return None

        first, second = await op.wait(one_rebooted_one_held, "one reboot, one held", 60)
        held = await client.get(REMEDIATIONS, f"{second}.kerneldeadlock", namespace=NS)
        assert (
            "RiskPolicy one-reboot: 1 of 1 allowed in flight"
            in condition(held, "Repaired")["message"]
        )
        assert not held["status"].get("attempts"), "no attempt recorded while held"
        await asyncio.sleep(3)
        assert records(faulty[second], "reboots") == [], "held back"

        # The first recovers: its reboot is reported done, and the second may reboot.
        await faults.clear(client, business, first)
        await op.wait(
            faults.remediation_where(client, f"{first}.kerneldeadlock", phase_is("Succeeded")),
            "the first node back",
            60,
        )

        async def second_rebooted() -> list[str]:
            return records(faulty[second], "reboots")

        await op.wait(second_rebooted, "the second reboot once the first was done", 60)
        ledger = await client.get(RISK_LEDGERS, "one-reboot")
        decisions = ledger["status"]["decisions"]
        assert {d["requester"].split(" ")[0] for d in decisions} == {
            "kokpit.io/remediation-operator"
        }
        assert [d["allowed"] for d in decisions if d["target"] == f"Machine {NS}/{second}"][
            -1
        ] is True
    finally:
        await client.delete(RISK_POLICIES, "one-reboot")


async def test_a_cordon_whose_status_write_was_lost_is_given_back_and_a_persons_is_kept(
    operator: OperatorProcess,
    client: Client,
    business: Client,
    package_versions: None,
) -> None:
    """The cordon and its record are two requests: the node's PATCH (which marks it
    ``kokpit.io/cordoned-by``) and the Remediation's status. An operator SIGKILLed between
    them leaves a cordoned, marked node under a Remediation still ``Cordoning``; the restarted
    one must take the cordon as its own and give the node back at the end. A node a person
    cordoned before its fault carries no mark: its remediation runs, and leaves it cordoned.

    The kill cannot be timed to fall between two requests, so the test makes that state: the
    operator is killed while the remediation waits (Pending, behind ``maxConcurrent: 1``), and
    the test writes what the two requests before the kill would have (admission's phase, the
    cordon with its mark)."""
    op, test = operator, "mark"
    stop = {"scopeLabel": DOMAIN, "minHealthyPercent": 50, "maxConcurrent": 1}
    await client.apply(
        REMEDIATION_POLICIES,
        policy(test, [{"action": "RestartKubelet", "timeoutSeconds": 120}], stormStop=stop),
        field_manager="test",
    )
    persons, kokpits = "mark-a", "mark-b"
    for name in (persons, kokpits, "mark-c", "mark-d"):
        await add_machine(client, business, name, test)

    # A person cordons a node; then it reports a fault.
    await business.patch(NODES, persons, {"spec": {"unschedulable": True}})
    await faults.report(client, business, persons)
    first = f"{persons}.kerneldeadlock"
    await op.wait(
        faults.remediation_where(client, first, phase_is("Verifying")), "the first repair", 60
    )
    # The second fault waits behind it (one remediation at a time); then the operator dies.
    await faults.report(client, business, kokpits)
    second = f"{kokpits}.kerneldeadlock"
    waiting = await op.wait(
        faults.remediation_where(client, second, phase_is("Pending")), "the second to wait", 30
    )
    op.kill()
    waiting = await client.get(REMEDIATIONS, second, namespace=NS)
    assert waiting["status"]["phase"] == "Pending", op.explain(str(waiting["status"]))
    meta = waiting["metadata"]
    # What the dead operator had written: admission's phase, then the cordon and its mark.
    await client.patch(
        REMEDIATIONS,
        second,
        {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": {"phase": "Cordoning"},
        },
        namespace=NS,
        subresource="status",
    )
    mark = f"{NS}/{second}/{meta['uid']}"
    await business.patch(
        NODES,
        kokpits,
        {"metadata": {"annotations": {CORDONED_BY: mark}}, "spec": {"unschedulable": True}},
    )

    await op.start()
    draining = await op.wait(
        faults.remediation_where(client, second, phase_is("Repairing", "Verifying")),
        "the restarted operator to take up the cordon",
        60,
    )
    assert draining["status"]["cordoned"] is True, "the mark says kokpit cordoned it"
    for name in (persons, kokpits):
        await faults.clear(client, business, name)
    for name in (first, second):
        await op.wait(
            faults.remediation_where(client, name, phase_is("Succeeded")), f"{name} to end", 60
        )

    node = await business.get(NODES, kokpits)
    assert not node["spec"].get("unschedulable"), "kokpit's cordon is given back"
    assert CORDONED_BY not in (node["metadata"].get("annotations") or {}), "and its mark"
    node = await business.get(NODES, persons)
    assert node["spec"].get("unschedulable") is True, "a person's cordon stays"
    assert CORDONED_BY not in (node["metadata"].get("annotations") or {})
    done = await client.get(REMEDIATIONS, first, namespace=NS)
    assert done["status"]["cordoned"] is False
    notes = [e["note"] for e in await faults.events(client, first) if e["reason"] == "Cordoned"]
    assert notes == [f"node {persons} was cordoned already"], notes
    await faults.saw(client, second, "Uncordoned")
    assert "Cordoned" not in await faults.reasons(client, second), "no second cordon"
    await business.patch(NODES, persons, {"spec": {"unschedulable": None}})
