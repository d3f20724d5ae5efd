"""The fault hub against the real meta-cluster and a real business cluster (process runtime,
KWOK playing the kubelets of ``sim`` Machines the real Machine-Operator joins): node conditions
in node-problem-detector's shape, flapping, a node whose kubelet stops (its Lease and then its
Ready condition), a node agent held by the business API server to its own node and to fault
conditions, and a probe that finds a broken kubelet.

``kokpit operator remediation`` and ``kokpit operator machine`` run as processes of their own
with the permissions of ``config/rbac`` (the probe test runs the hub in this process, to reach
into its simulated hosts)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fixtures.business import BusinessCluster
from kokpit.api.v1alpha1 import MACHINE_PACKAGE_VERSIONS, MACHINES, NODE_FAULTS
from kokpit.api.v1alpha1.nodefault import HISTORY_MAX, fault_name
from kokpit.controllers import fault
from kokpit.controllers.fault import FaultOptions
from kokpit.local import Kubectl, LocalCluster
from kokpit.providers.controlplane.clients import business_clusters
from kokpit.providers.machine.sim import SimExecutor
from kokpit.runtime import (
    AlreadyExists,
    Client,
    ClientConfig,
    EventRecorder,
    Forbidden,
    Invalid,
    Manager,
    ManagerOptions,
    NotFound,
    PatchType,
)
from kokpit.runtime.resources import EVENTS, LEASES, NODES
from tests.e2e.operators import OperatorProcess, operator_process, write_kubeconfig
from tests.e2e.rbac import operator_identity
from tests.e2e.support import until

pytestmark = pytest.mark.usefixtures("kokpit_crds")
NS = "faults-e2e"
#: How the module's business cluster (the `biz` fixture) is made.
BUSINESS_CLUSTER = {"lease_seconds": 8}
PV = "faults-pv"
#: The hub's graces, short for the test: KWOK renews each Lease every 2 s (8 s Leases).
HUB_ARGS = ["--not-ready-grace", "3", "--lease-grace", "8", "--probe-period", "3"]
Object = dict[str, Any]


@pytest.fixture
def admin(local_cluster: LocalCluster) -> ClientConfig:
    return ClientConfig.from_kubeconfig(local_cluster.kubeconfig)


@pytest.fixture
async def machine_operator(
    kubectl: Kubectl, admin: ClientConfig, biz: BusinessCluster, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    """The Machine-Operator, joining ``sim`` Machines as KWOK nodes."""
    identity = operator_identity(kubectl, admin, "machine-operator", [NS])
    kubeconfig = write_kubeconfig(identity, tmp_path / "machine-operator.kubeconfig")
    log = tmp_path / "machine-operator.log"
    with operator_process("machine", kubeconfig, log, ["--executors", "sim"]) as op:
        await op.start()
        yield op


@pytest.fixture
def hub_identity(kubectl: Kubectl, admin: ClientConfig, biz: BusinessCluster) -> ClientConfig:
    """The remediation operator's service account: config/rbac/remediation-operator.yaml,
    its namespaced role bound in NS."""
    return operator_identity(kubectl, admin, "remediation-operator", [NS])


@pytest.fixture
async def hub(
    hub_identity: ClientConfig, machine_operator: OperatorProcess, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    """``kokpit operator remediation`` as a process of its own."""
    kubeconfig = write_kubeconfig(hub_identity, tmp_path / "remediation-operator.kubeconfig")
    log = tmp_path / "remediation-operator.log"
    args = [*HUB_ARGS, "--executors", "sim"]
    with operator_process("remediation", kubeconfig, log, args) as op:
        await op.start()
        yield op


def hub_owned(fault: Object) -> Object:
    """A NodeFault's status as the fault hub writes it (the Remediation workflow owns
    ``conditions`` and ``remediation``)."""
    status = fault.get("status") or {}
    return {k: v for k, v in status.items() if k not in ("conditions", "remediation")}


@pytest.fixture
async def business(biz: BusinessCluster) -> AsyncIterator[Client]:
    async with Client(ClientConfig.from_kubeconfig(biz.kubeconfig)) as c:
        yield c


# -- helpers --------------------------------------------------------------------------------


def package(name: str, kind: str) -> Object:
    steps = {action: {"run": "true"} for action in ("check", "install", "verify")}
    return {"name": name, "kind": kind, "version": "1.0", "install": {"script": steps}}


async def joined_machine(client: Client, name: str, op: OperatorProcess) -> Object:
    """A ``sim`` Machine of the business cluster, once it runs as a node."""
    with contextlib.suppress(AlreadyExists):
        await client.create(
            MACHINE_PACKAGE_VERSIONS,
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "MachinePackageVersion",
                "metadata": {"name": PV},
                "spec": {
                    "packages": [
                        package("containerd", "ContainerRuntime"),
                        package("kubelet", "Kubelet"),
                    ]
                },
            },
        )
    await client.create(
        MACHINES,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "clusterRef": {"name": "biz"},
                "packageVersion": PV,
                "executor": "sim",
                "address": "10.0.0.1",
            },
        },
    )

    async def running() -> Object | None:
        obj = await client.get(MACHINES, name, namespace=NS)
        status = obj.get("status") or {}
        return obj if status.get("nodeName") and status.get("phase") == "Running" else None

    return await op.wait(running, f"Machine {name} to join and run", 90)


async def set_condition(
    business: Client, node: str, type_: str, status: str, message: str = ""
) -> None:
    """Write a node condition as node-problem-detector does (its own patch of the status)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    condition = {
        "type": type_,
        "status": status,
        "reason": "KernelHasDeadlock" if status == "True" else "KernelHasNoDeadlock",
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    await business.patch(
        NODES,
        node,
        {"status": {"conditions": [condition]}},
        patch_type=PatchType.STRATEGIC,
        subresource="status",
    )


def fault_is(
    client: Client, machine: str, type_: str, done: Callable[[Object], bool]
) -> Callable[[], Awaitable[Object | None]]:
    """A check for :meth:`OperatorProcess.wait`: the Machine's record of ``type_`` once
    ``done(status)``."""

    async def check() -> Object | None:
        try:
            obj = await client.get(NODE_FAULTS, fault_name(machine, type_), namespace=NS)
        except NotFound:
            return None
        return obj if done(obj.get("status") or {}) else None

    return check


def state(value: str) -> Callable[[Object], bool]:
    return lambda status: status.get("state") == value


def counted(times: int) -> Callable[[Object], bool]:
    return lambda status: status.get("state") == "Active" and status.get("count") == times


async def faults_of(client: Client, machine: str) -> list[Object]:
    listed = await client.list(NODE_FAULTS, namespace=NS)
    return [f for f in listed.items if f["spec"]["machineRef"]["name"] == machine]


# -- tests ----------------------------------------------------------------------------------


async def test_an_npd_condition_is_one_fault_record_that_clears_and_flaps_in_place(
    client: Client, business: Client, kubectl: Kubectl, hub: OperatorProcess
) -> None:
    await joined_machine(client, "npd-1", hub)
    await set_condition(business, "npd-1", "KernelDeadlock", "True", "task docker:7 blocked")
    found = await hub.wait(
        fault_is(client, "npd-1", "KernelDeadlock", state("Active")), "an Active fault", 30
    )
    status = found["status"]
    assert (status["source"], status["count"], status["nodeName"], status["clusterName"]) == (
        "NodeCondition",
        1,
        "npd-1",
        "biz",
    )
    assert "task docker:7 blocked" in status["message"]
    table = kubectl.run("get", "nf", "-n", NS)
    assert "npd-1.kerneldeadlock" in table
    assert "KernelDeadlock" in table
    assert "Active" in table

    async def detected() -> bool:
        """A FaultDetected Event (recorded just after the record is written)."""
        events = await client.list(EVENTS, namespace=NS, field_selector="regarding.name=npd-1")
        return any(e["reason"] == "FaultDetected" for e in events.items)

    await until("a FaultDetected Event", detected, 10)

    # The same fault reported again (NPD re-reports with a new message): the record is not
    # written (writes follow transitions). Then it clears: Cleared, nothing in between.
    await set_condition(business, "npd-1", "KernelDeadlock", "True", "task docker:7 still blocked")
    await asyncio.sleep(2)  # the hub reconciles a node change within milliseconds
    again = await client.get(NODE_FAULTS, "npd-1.kerneldeadlock", namespace=NS)
    # The hub's fields only: the Remediation workflow (in the same process) may record on
    # the fault, late on a loaded machine, that no policy takes it.
    assert hub_owned(again) == hub_owned(found)
    await set_condition(business, "npd-1", "KernelDeadlock", "False", "kernel is fine")
    cleared = await hub.wait(
        fault_is(client, "npd-1", "KernelDeadlock", state("Cleared")), "the fault cleared", 30
    )
    assert [h["state"] for h in cleared["status"]["history"]] == ["Active", "Cleared"]
    assert cleared["status"]["count"] == 1

    # It flaps: every transition lands in the same record; count says how often it came back,
    # and the history keeps the latest HISTORY_MAX transitions.
    flaps = 9
    for i in range(flaps):
        await set_condition(business, "npd-1", "KernelDeadlock", "True", f"flap {i}")
        await hub.wait(
            fault_is(client, "npd-1", "KernelDeadlock", counted(i + 2)),
            f"flap {i} counted",
            30,
        )
        await set_condition(business, "npd-1", "KernelDeadlock", "False", f"calm {i}")
        await hub.wait(
            fault_is(client, "npd-1", "KernelDeadlock", state("Cleared")), "cleared again", 30
        )
    (record,) = [
        f for f in await faults_of(client, "npd-1") if f["spec"]["type"] == "KernelDeadlock"
    ]
    status = record["status"]
    assert status["count"] == 1 + flaps
    assert len(status["history"]) == HISTORY_MAX
    assert status["history"][-1]["message"] == f"KernelHasNoDeadlock: calm {flaps - 1}"
    assert status["firstSeen"] == found["status"]["firstSeen"]


async def test_a_node_whose_kubelet_stops_goes_lease_stale_then_not_ready(
    client: Client, business: Client, hub: OperatorProcess
) -> None:
    await joined_machine(client, "quiet-1", hub)
    # The node's kubelet (KWOK) stops renewing its Lease: the Lease is taken over by another
    # holder for an hour, which KWOK respects. The controller-manager then marks the node's
    # Ready Unknown after its grace period.
    renewed = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    taken = {"spec": {"holderIdentity": "e2e", "renewTime": renewed, "leaseDurationSeconds": 3600}}
    await business.patch(LEASES, "quiet-1", taken, namespace="kube-node-lease")
    stale = await hub.wait(
        fault_is(client, "quiet-1", "NodeLeaseStale", state("Active")), "a stale Lease", 60
    )
    assert stale["status"]["source"] == "NodeLease"
    assert "last renewed" in stale["status"]["message"]
    not_ready = await hub.wait(
        fault_is(client, "quiet-1", "NodeNotReady", state("Active")), "NodeNotReady", 90
    )
    assert not_ready["status"]["source"] == "NodeReady"
    assert "Unknown" in not_ready["status"]["message"]


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kokpit", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_a_node_agent_reports_for_its_own_node_and_fault_types_only(
    client: Client,
    business: Client,
    local_cluster: LocalCluster,
    hub: OperatorProcess,
    tmp_path: Path,
) -> None:
    await joined_machine(client, "agent-a", hub)
    other = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "agent-b"}}
    with contextlib.suppress(AlreadyExists):
        await business.create(NODES, other)
    kubeconfig = tmp_path / "agent-a.kubeconfig"
    issued = agent_cli(
        *("kubeconfig", "--kubeconfig", str(local_cluster.kubeconfig), "--cluster", f"{NS}/biz"),
        *("--node", "agent-a", "-o", str(kubeconfig)),
    )
    assert issued.returncode == 0, issued.stderr
    assert kubeconfig.stat().st_mode & 0o077 == 0

    reported = agent_cli(
        *("report", "--kubeconfig", str(kubeconfig), "--node", "agent-a"),
        *("--type", "DiskFailure", "--status", "True", "--message", "sda: 12 pending sectors"),
    )
    assert reported.returncode == 0, reported.stderr
    disk = await hub.wait(
        fault_is(client, "agent-a", "DiskFailure", state("Active")), "the agent's fault", 30
    )
    assert "sda: 12 pending sectors" in disk["status"]["message"]

    # Another node: refused by the business API server.
    refused = agent_cli(
        *("report", "--kubeconfig", str(kubeconfig), "--node", "agent-b"),
        *("--type", "DiskFailure", "--status", "True"),
    )
    assert refused.returncode == 1
    assert "reports for its own node only" in refused.stderr
    async with Client(ClientConfig.from_kubeconfig(kubeconfig)) as agent:
        condition = {"type": "DiskFailure", "status": "True", "reason": "Forged"}
        with pytest.raises(Forbidden, match="may not change node agent-b"):
            await agent.patch(
                NODES,
                "agent-b",
                {"status": {"conditions": [condition]}},
                patch_type=PatchType.STRATEGIC,
                subresource="status",
            )
        # Its own node, but a condition that is no fault type (Ready is the kubelet's).
        for type_ in ("Ready", "SomethingNew"):
            forged = {"type": type_, "status": "True", "reason": "Forged"}
            with pytest.raises(Invalid, match=f"reports only fault conditions.*not {type_}"):
                await agent.patch(
                    NODES,
                    "agent-a",
                    {"status": {"conditions": [forged]}},
                    patch_type=PatchType.STRATEGIC,
                    subresource="status",
                )
        with pytest.raises(Forbidden, match="only the fault conditions"):
            await agent.patch(
                NODES,
                "agent-a",
                {"status": {"addresses": [{"type": "Hostname", "address": "elsewhere"}]}},
                patch_type=PatchType.STRATEGIC,
                subresource="status",
            )
        with pytest.raises(Forbidden):
            await agent.patch(NODES, "agent-a", {"metadata": {"labels": {"x": "y"}}})
    node_b = await business.get(NODES, "agent-b")
    types = {c["type"] for c in (node_b.get("status") or {}).get("conditions") or []}
    assert "DiskFailure" not in types


async def test_a_probe_finds_a_broken_kubelet_and_an_unreachable_host(
    client: Client,
    hub_identity: ClientConfig,
    machine_operator: OperatorProcess,
) -> None:
    """The hub in this process (the remediation operator's credentials still), so the test
    can break the simulated host's kubelet."""
    sim = SimExecutor(provisioned=True)
    async with Client(hub_identity) as identity:
        manager = Manager(identity, ManagerOptions(health_port=None))
        recorder = EventRecorder(identity, "kokpit.io/remediation-operator", "e2e")
        options = FaultOptions(probe_period=2, not_ready_grace=3, lease_grace=8)
        clusters = business_clusters(manager, watch_secrets=False)
        fault.setup(manager, clusters, {"sim": sim}, recorder, options)
        task = asyncio.create_task(manager.start())
        try:
            await joined_machine(client, "probed-1", machine_operator)
            sim.host(f"{NS}/probed-1").unhealthy.add("kubelet")
            broken = await machine_operator.wait(
                fault_is(client, "probed-1", "KubeletUnhealthy", state("Active")),
                "KubeletUnhealthy",
                30,
            )
            assert broken["status"]["source"] == "Probe"
            assert "kubelet verify failed" in broken["status"]["message"]
            with pytest.raises(NotFound):  # the runtime passes: never a record
                await client.get(
                    NODE_FAULTS, fault_name("probed-1", "ContainerRuntimeUnhealthy"), namespace=NS
                )

            sim.host(f"{NS}/probed-1").unhealthy.clear()
            await machine_operator.wait(
                fault_is(client, "probed-1", "KubeletUnhealthy", state("Cleared")),
                "the kubelet healed",
                30,
            )
            sim.host(f"{NS}/probed-1").reachable = False
            gone = await machine_operator.wait(
                fault_is(client, "probed-1", "HostUnreachable", state("Active")),
                "HostUnreachable",
                30,
            )
            assert "unreachable" in gone["status"]["message"]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await recorder.close()
