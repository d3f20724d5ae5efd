"""The repair rungs that act outside the host's own shell, each through a whole Remediation:
a fault reported on the Node → cordon → drain → the rung → verify → uncordon (or the ladder goes
on and escalates), against the real meta-cluster and a real business cluster.

- PowerCycle through the Machine's BMC: the sushy-tools Redfish emulator (TLS from its own CA,
  basic auth), with a right login, a wrong password and a certificate of another CA.
- Ticket through the policy's ticket webhook: an HTTPS receiver.
- Reprovision by the Machine-Operator: both operators run as processes of their own, each with
  exactly its RBAC (config/rbac), the Machine on a real sshd test host; the remediation
  operator is SIGKILLed once its request is on the Machine.

Faults come as node-problem-detector reports them (a KernelDeadlock condition on the Node).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.business import BusinessCluster
from kokpit.api.conditions import get
from kokpit.api.v1alpha1 import (
    MACHINES,
    REMEDIATION_POLICIES,
    REMEDIATIONS,
)
from kokpit.api.v1alpha1.machine import REPROVISION_ANNOTATION
from kokpit.local import Kubectl, KubectlError, LocalCluster
from kokpit.providers.machine.kubelet import KwokKubelet, Registration
from kokpit.providers.machine.sshd import SimulatedHost
from kokpit.providers.repair.emulator import FakeSystem, LocalCA, RedfishEmulator
from kokpit.providers.repair.receiver import WebhookReceiver
from kokpit.runtime import Client, ClientConfig, Forbidden, NotFound
from kokpit.runtime.resources import NODES, SECRETS
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
NS = "repairs-e2e"
#: Its node faults and remediations.
faults = Faults(NS)
ADMISSION = Path(__file__).parents[3] / "config" / "admission"
OPERATOR_USER = "system:serviceaccount:kokpit-system:kokpit-remediation-operator"
#: The Machine label each test's policy selects, and the node label of its failure domain.
TEST = "kokpit.io/e2e-test"
Object = dict[str, Any]

# -- fixtures -------------------------------------------------------------------------------


def identity(kubectl: Kubectl, local_cluster: LocalCluster, operator: str) -> ClientConfig:
    """``kokpit-<operator>``'s service account with exactly config/rbac/<operator>.yaml."""
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    return operator_identity(kubectl, admin, operator, [NS])


@pytest.fixture(scope="module")
def remediation_identity(
    kubectl: Kubectl, local_cluster: LocalCluster, biz: BusinessCluster
) -> ClientConfig:
    return identity(kubectl, local_cluster, "remediation-operator")


@pytest.fixture(scope="module")
def machine_writes_policy(kubectl: Kubectl, remediation_identity: ClientConfig) -> None:
    """config/admission/remediation-operator-machines.yaml, in force when this returns: a
    label patched by the remediation operator's identity is refused."""
    kubectl.run("apply", "-f", str(ADMISSION / "remediation-operator-machines.yaml"))
    name = "policy-probe"
    probe = {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "clusterRef": {"name": "biz"},
            "packageVersion": "none",
            "executor": "sim",
            "address": "10.0.0.9",
        },
    }
    kubectl.apply([probe])
    patch = ["patch", "km", name, "-n", NS, "--type=merge", "--as", OPERATOR_USER]
    deadline = time.monotonic() + 30
    try:
        for attempt in itertools.count():
            labels = {"metadata": {"labels": {"probe": str(attempt)}}}
            try:
                kubectl.run(*patch, "-p", json.dumps(labels))
            except KubectlError as e:
                if "may not change a Machine's labels" in e.stderr:
                    return
                raise
            assert time.monotonic() < deadline, "the admission policy never came into force"
            time.sleep(0.2)
    finally:
        kubectl.run("delete", "km", name, "-n", NS)


@pytest.fixture
async def remediation_operator(
    remediation_identity: ClientConfig, machine_writes_policy: None, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    config = remediation_identity
    kubeconfig = write_kubeconfig(config, tmp_path / "remediation-operator.kubeconfig")
    args = ["--executors", "ssh,sim", "--admission-delay", "1"]
    with operator_process("remediation", kubeconfig, tmp_path / "remediation.log", args) as op:
        await op.start()
        yield op


@pytest.fixture
async def machine_operator(
    kubectl: Kubectl, local_cluster: LocalCluster, biz: BusinessCluster, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    config = identity(kubectl, local_cluster, "machine-operator")
    kubeconfig = write_kubeconfig(config, tmp_path / "machine-operator.kubeconfig")
    args = ["--kwok-nodes", "ssh"]  # the test hosts run no kubelet
    with operator_process("machine", kubeconfig, tmp_path / "machine.log", args) as op:
        await op.start()
        yield op


@pytest.fixture
async def business(biz: BusinessCluster) -> AsyncIterator[Client]:
    async with Client(ClientConfig.from_kubeconfig(biz.kubeconfig)) as c:
        yield c


@pytest.fixture
def host(ssh_hosts: list[SimulatedHost]) -> SimulatedHost:
    """A session sshd host, running, with an empty root."""
    chosen = ssh_hosts[0]
    chosen.start()
    subprocess.run(["rm", "-rf", "--", *map(str, chosen.root.iterdir())], check=True)
    return chosen


# -- the world -------------------------------------------------------------------------------


def policy(name: str, steps: list[Object], **spec: Any) -> Object:
    """A policy for the Machines labelled ``TEST=name``; the storm stop is off (each test has
    one faulty node and no healthy peers)."""
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "RemediationPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "machineSelector": {"matchLabels": {TEST: name}},
            "faultTypes": ["KernelDeadlock"],
            "steps": steps,
            "recoverySeconds": 1,
            "stormStop": {"scopeLabel": TEST, "minHealthyPercent": 0, "maxConcurrent": 5},
            **spec,
        },
    }


def secret(name: str, data: dict[str, str]) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "type": "Opaque",
        "data": data,
    }


async def add_bmc_machine(
    client: Client, business: Client, name: str, test: str, bmc: Object
) -> None:
    """A Machine with a BMC and its Node Ready, as the Machine-Operator leaves one (a simulated
    host: its Node registered for KWOK)."""
    spec: Object = {
        "clusterRef": {"name": "biz"},
        "packageVersion": "repairs-simple",
        "executor": "sim",
        "address": "10.0.0.1",
        "bmc": bmc,
    }
    meta = {"name": name, "namespace": NS, "labels": {TEST: test}}
    await client.create(
        MACHINES,
        {"apiVersion": "kokpit.io/v1alpha1", "kind": "Machine", "metadata": meta, "spec": spec},
    )
    await client.patch(
        MACHINES, name, {"status": {"nodeName": name}}, namespace=NS, subresource="status"
    )
    await KwokKubelet().register(
        business, Registration(name, f"{NS}/{name}", "10.0.0.1", labels={TEST: test})
    )
    await until(f"node {name} Ready", lambda: node_ready(business, name), 60)


async def node_ready(business: Client, name: str) -> bool:
    node = await business.get(NODES, name)
    conditions = (node.get("status") or {}).get("conditions") or []
    return (get(conditions, "Ready") or {}).get("status") == "True"


def resets(emulator: RedfishEmulator, system: FakeSystem) -> list[int]:
    """The statuses of the reset actions the emulator answered for ``system``."""
    path = f"{system.path}/Actions/ComputerSystem.Reset"
    return [status for method, p, status in emulator.requests() if (method, p) == ("POST", path)]


@pytest.fixture(scope="module")
def simple_packages(kubectl: Kubectl, kokpit_crds: None) -> None:
    kubectl.apply(
        [
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "MachinePackageVersion",
                "metadata": {"name": "repairs-simple"},
                "spec": {
                    "packages": [
                        {
                            "name": "app",
                            "kind": "Other",
                            "version": "1",
                            "install": {
                                "script": {"check": {"run": "echo 1"}, "install": {"run": "true"}}
                            },
                        }
                    ]
                },
            }
        ]
    )


# -- BMC ---------------------------------------------------------------------------------------


async def test_a_power_cycle_through_the_bmc_repairs_a_node_through_a_whole_remediation(
    remediation_operator: OperatorProcess,
    client: Client,
    business: Client,
    redfish_emulator: RedfishEmulator,
    bmc_system: FakeSystem,
    simple_packages: None,
) -> None:
    op, test, faulty = remediation_operator, "power", "power-a"
    await client.apply(
        SECRETS, secret("power-a-bmc", redfish_emulator.secret_data()), field_manager="test"
    )
    bmc = redfish_emulator.bmc(bmc_system, "power-a-bmc")
    await add_bmc_machine(client, business, faulty, test, bmc)
    await client.apply(
        REMEDIATION_POLICIES,
        policy(test, [{"action": "PowerCycle", "timeoutSeconds": 120}]),
        field_manager="test",
    )
    assert redfish_emulator.get(bmc_system.path)["PowerState"] == "On"
    name = f"{faulty}.kerneldeadlock"
    await faults.report(client, business, faulty)

    verifying = await op.wait(
        faults.remediation_where(client, name, phase_is("Verifying")), "the power cycle", 120
    )
    [attempt] = verifying["status"]["attempts"]
    assert (attempt["action"], attempt["state"]) == ("PowerCycle", "Started")
    assert attempt["message"] == "PowerCycle: was On; ForceRestart; now On"
    assert resets(redfish_emulator, bmc_system) == [204]
    assert redfish_emulator.get(bmc_system.path)["PowerState"] == "On"
    assert await unschedulable(business, faulty), "cordoned while it is repaired"

    # The host came back from its power cycle without the deadlock.
    await faults.clear(client, business, faulty)
    done = await op.wait(
        faults.remediation_where(client, name, phase_is("Succeeded")), "the node to recover", 60
    )
    assert done["status"]["attempts"][0]["state"] == "Succeeded"
    assert condition(done, "Repaired")["reason"] == "Recovered"
    assert not await unschedulable(business, faulty)
    await faults.saw(
        client, name, "Cordoned", "Drained", "RepairStarted", "Recovered", "Uncordoned"
    )
    assert resets(redfish_emulator, bmc_system) == [204], "one reset, never again"


async def test_a_bmc_refusing_login_or_with_a_wrong_certificate_is_a_clear_condition_and_the_ladder_goes_on(  # noqa: E501
    remediation_operator: OperatorProcess,
    client: Client,
    business: Client,
    redfish_emulator: RedfishEmulator,
    bmc_system: FakeSystem,
    webhook_receiver: WebhookReceiver,
    simple_packages: None,
) -> None:
    op = remediation_operator
    wrong = "not-the-Passw0rd-42"
    await client.apply(
        SECRETS,
        secret("login-a-bmc", redfish_emulator.secret_data(password=wrong)),
        field_manager="test",
    )
    await client.apply(
        SECRETS, secret("cert-a-bmc", redfish_emulator.secret_data()), field_manager="test"
    )
    token = base64.b64encode(b"ticket-t0ken").decode()
    await client.apply(SECRETS, secret("ticket-token", {"token": token}), field_manager="test")
    assert webhook_receiver.ca is not None
    ticket = {
        "url": webhook_receiver.url("/hooks/tickets"),
        "caBundle": webhook_receiver.ca.pem,
        "secretRef": {"name": "ticket-token"},
    }
    # A wrong password: PowerCycle fails, the ladder goes on to a ticket.
    await add_bmc_machine(
        client, business, "login-a", "login", redfish_emulator.bmc(bmc_system, "login-a-bmc")
    )
    steps = [
        {"action": "PowerCycle", "timeoutSeconds": 60},
        {"action": "Ticket", "timeoutSeconds": 120},
    ]
    await client.apply(
        REMEDIATION_POLICIES, policy("login", steps, ticketWebhook=ticket), field_manager="test"
    )
    # A certificate of another CA: PowerCycle is the only rung, so the remediation escalates.
    other_ca = LocalCA.create("not the BMC's CA").pem
    bmc = redfish_emulator.bmc(bmc_system, "cert-a-bmc", caBundle=other_ca)
    await add_bmc_machine(client, business, "cert-a", "cert", bmc)
    await client.apply(
        REMEDIATION_POLICIES,
        policy("cert", [{"action": "PowerCycle", "timeoutSeconds": 60}]),
        field_manager="test",
    )
    await faults.report(client, business, "login-a")
    await faults.report(client, business, "cert-a")

    ticketed = await op.wait(
        faults.remediation_where(client, "login-a.kerneldeadlock", phase_is("Verifying")),
        "the ladder to go on to the ticket",
        90,
    )
    failed, ticket_attempt = ticketed["status"]["attempts"]
    assert (failed["action"], failed["state"], failed["reason"]) == (
        "PowerCycle",
        "Failed",
        "BMCAuthFailed",
    )
    assert f"BMC {redfish_emulator.address}" in failed["message"]
    assert f"refused the login of user '{redfish_emulator.username}'" in failed["message"]
    assert (ticket_attempt["action"], ticket_attempt["state"]) == ("Ticket", "Started")
    assert ticket_attempt["message"].startswith("ticket "), ticket_attempt["message"]
    [posted] = webhook_receiver.requests_to("/hooks/tickets")
    body = posted.json()
    assert isinstance(body, dict)
    assert (body["event"], body["machine"], body["remediation"]) == (
        "Ticket",
        "login-a",
        "login-a.kerneldeadlock",
    )
    assert [a["action"] for a in body["attempts"]] == ["PowerCycle", "Ticket"]
    assert posted.headers["Authorization"] == "Bearer ticket-t0ken"

    escalated = await op.wait(
        faults.remediation_where(client, "cert-a.kerneldeadlock", phase_is("Escalated")),
        "the wrong certificate to escalate",
        90,
    )
    [attempt] = escalated["status"]["attempts"]
    assert (attempt["state"], attempt["reason"]) == ("Failed", "BMCCertificateInvalid")
    repaired = condition(escalated, "Repaired")
    assert (repaired["status"], repaired["reason"]) == ("False", "BMCCertificateInvalid")
    assert f"BMC {redfish_emulator.address}" in repaired["message"]
    assert "spec.bmc.caBundle" in repaired["message"]
    assert condition(escalated, "Escalated")["status"] == "True"
    assert await unschedulable(business, "cert-a"), "an escalated node stays cordoned"

    # Neither BMC was reset, and no password is in any status or Event.
    assert resets(redfish_emulator, bmc_system) == []
    for name in ("login-a.kerneldeadlock", "cert-a.kerneldeadlock"):
        obj = await client.get(REMEDIATIONS, name, namespace=NS)

        async def repair_failed() -> list[str]:
            """The RepairFailed notes (Events are recorded after the status is written)."""
            found = await faults.events(client, name)  # noqa: B023
            return [e["note"] for e in found if e["reason"] == "RepairFailed"]

        failed_notes = await until(f"{name}'s RepairFailed Event", repair_failed, 10)
        notes = [e.get("note", "") for e in await faults.events(client, name)]
        assert len(failed_notes) == 1, notes
        assert redfish_emulator.address in failed_notes[0]
        for text in (str(obj), *notes):
            assert wrong not in text
            assert redfish_emulator.password not in text
    [login_failed] = [
        e["note"]
        for e in await faults.events(client, "login-a.kerneldeadlock")
        if e["reason"] == "RepairFailed"
    ]
    assert "BMCAuthFailed" in login_failed

    # The ticket's people fixed the host: it recovers, the ticket rung succeeds.
    await faults.clear(client, business, "login-a")
    done = await op.wait(
        faults.remediation_where(client, "login-a.kerneldeadlock", phase_is("Succeeded")),
        "the ticketed node to recover",
        60,
    )
    assert [a["state"] for a in done["status"]["attempts"]] == ["Failed", "Succeeded"]
    assert not await unschedulable(business, "login-a")


# -- Reprovision ------------------------------------------------------------------------------

STATE = '"$KOKPIT_ROOT/var/lib/app"'
INSTALLS = "var/lib/app/installs.log"


def reprovisioned_package_version() -> Object:
    """A kubelet package (so the Machine joins as a Node) whose install records each run on
    the host (with KOKPIT_REPROVISION), and takes 4 s when it re-provisions, so a test can
    kill the requester while it runs."""
    install = (
        f"mkdir -p {STATE}\n"
        f'echo "install ${{KOKPIT_REPROVISION:-no}} $(date +%s.%N)" >> {STATE}/installs.log\n'
        'if [ -n "${KOKPIT_REPROVISION:-}" ]; then sleep 4; fi\n'
        f'echo "$KOKPIT_VERSION" > {STATE}/version'
    )
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "MachinePackageVersion",
        "metadata": {"name": "repairs-reprovisioned"},
        "spec": {
            "packages": [
                {
                    "name": "kubelet",
                    "kind": "Kubelet",
                    "version": "1",
                    "install": {
                        "script": {
                            "check": {"run": f"cat {STATE}/version 2>/dev/null || true"},
                            "install": {"run": install, "timeoutSeconds": 60},
                        }
                    },
                }
            ]
        },
    }


def installs(host: SimulatedHost) -> list[str]:
    path = host.root / INSTALLS
    return path.read_text().splitlines() if path.exists() else []


async def machine_gone(client: Client, name: str) -> bool:
    try:
        await machine(client, name)
    except NotFound:
        return True
    return False


async def machine(client: Client, name: str) -> Object:
    return await client.get(MACHINES, name, namespace=NS)


async def test_reprovision_reinstalls_the_packages_once_across_a_sigkill_of_the_requester(
    remediation_operator: OperatorProcess,
    machine_operator: OperatorProcess,
    client: Client,
    business: Client,
    kubectl: Kubectl,
    host: SimulatedHost,
) -> None:
    op, name, test = remediation_operator, "repro-a", "reprovision"
    kubectl.apply([reprovisioned_package_version()])
    await client.apply(SECRETS, host.ssh_secret(NS, name), field_manager="test")
    spec: Object = {
        "clusterRef": {"name": "biz"},
        "packageVersion": "repairs-reprovisioned",
        "address": host.address,
        "port": host.port,
        "sshSecretRef": {"name": name},
        "nodeLabels": {TEST: test},
    }
    meta = {"name": name, "namespace": NS, "labels": {TEST: test}}
    await client.create(
        MACHINES,
        {"apiVersion": "kokpit.io/v1alpha1", "kind": "Machine", "metadata": meta, "spec": spec},
    )

    async def joined() -> Object | None:
        obj = await machine(client, name)
        ready = condition(obj, "Ready").get("status") == "True"
        return obj if ready and obj["status"].get("nodeName") else None

    await machine_operator.wait(joined, "the Machine to join as a Node", 90)
    await until(f"node {name} Ready", lambda: node_ready(business, name), 60)
    assert [line.split()[:2] for line in installs(host)] == [["install", "no"]]

    await client.apply(
        REMEDIATION_POLICIES,
        policy(test, [{"action": "Reprovision", "timeoutSeconds": 120}]),
        field_manager="test",
    )
    rem = f"{name}.kerneldeadlock"
    await faults.report(client, business, name)

    async def requested() -> str | None:
        token = ((await machine(client, name))["metadata"].get("annotations") or {}).get(
            REPROVISION_ANNOTATION
        )
        return str(token) if token else None

    # The risky moment: the request is on the Machine, the remediation operator waits for it.
    token = await op.wait(requested, "the re-provisioning request", 90)
    op.kill()
    obj = await client.get(REMEDIATIONS, rem, namespace=NS)
    [attempt] = obj["status"]["attempts"]
    assert (attempt["action"], attempt["state"]) == ("Reprovision", "Started"), str(obj)
    assert token == f"{obj['metadata']['uid']}/0/{attempt['startedAt']}"

    await op.start()

    async def served() -> Object | None:
        obj = await machine(client, name)
        return obj if obj["status"].get("reprovisioned") == token else None

    await machine_operator.wait(served, "the Machine-Operator to serve the request", 90)
    lines = installs(host)
    assert [line.split()[:2] for line in lines] == [["install", "no"], ["install", "true"]]
    assert float(lines[1].split()[2]) >= api_seconds(attempt["startedAt"]), "after the request"

    # Re-provisioned, the host is well again.
    await faults.clear(client, business, name)
    done = await op.wait(
        faults.remediation_where(client, rem, phase_is("Succeeded")), "the node to recover", 90
    )
    [attempt] = done["status"]["attempts"]
    assert attempt["state"] == "Succeeded"
    assert attempt["message"] == (
        f"Reprovision: Machine {name} installed its packages again (request {token})"
    )
    await faults.saw(client, rem, "RepairResumed")
    await faults.saw(client, name, "Reprovisioned")
    assert not await unschedulable(business, name)
    # Served once: the restarted operator's request did not reinstall again, nor does time.
    await asyncio.sleep(3)
    assert len(installs(host)) == 2, installs(host)

    await client.delete(MACHINES, name, namespace=NS)

    await machine_operator.wait(lambda: machine_gone(client, name), "the Machine deleted", 90)


async def test_the_machine_operator_serves_a_request_once_even_when_killed_midway(
    machine_operator: OperatorProcess,
    client: Client,
    business: Client,
    kubectl: Kubectl,
    host: SimulatedHost,
) -> None:
    """The other side of the request, with the test as the requester: the Machine-Operator
    SIGKILLed during the reinstall serves the request again once restarted (never skipped);
    a request served is never served again, by a restarted operator either."""
    op, name = machine_operator, "repro-b"
    kubectl.apply([reprovisioned_package_version()])
    await client.apply(SECRETS, host.ssh_secret(NS, name), field_manager="test")
    spec: Object = {
        "clusterRef": {"name": "biz"},
        "packageVersion": "repairs-reprovisioned",
        "address": host.address,
        "port": host.port,
        "sshSecretRef": {"name": name},
    }
    meta = {"name": name, "namespace": NS}
    await client.create(
        MACHINES,
        {"apiVersion": "kokpit.io/v1alpha1", "kind": "Machine", "metadata": meta, "spec": spec},
    )

    async def ready() -> Object | None:
        obj = await machine(client, name)
        return obj if condition(obj, "Ready").get("status") == "True" else None

    await op.wait(ready, "the Machine to be Ready", 90)
    token = "e2e-request-1"
    body = {"metadata": {"annotations": {REPROVISION_ANNOTATION: token}}}
    await client.patch(MACHINES, name, body, namespace=NS)

    async def reinstalling() -> bool:
        return any(line.startswith("install true") for line in installs(host))

    await op.wait(reinstalling, "the reinstall to start", 60)
    op.kill()  # mid-install (it sleeps 4 s)
    assert (await machine(client, name))["status"].get("reprovisioned") is None
    await op.start()

    async def served() -> Object | None:
        obj = await machine(client, name)
        done = obj["status"].get("reprovisioned") == token
        return obj if done and condition(obj, "Ready").get("status") == "True" else None

    await op.wait(served, "the request to be served after the restart", 90)
    runs = [line.split()[1] for line in installs(host)]
    assert runs == ["no", "true", "true"], "the interrupted reinstall ran again, once"

    async def told() -> bool:
        return "Reprovisioned" in [e["reason"] for e in await faults.events(client, name)]

    await op.wait(told, "the Reprovisioned Event", 10)

    # Served: a restarted operator (its first reconcile checks everything) does not serve it
    # again, and writing the same token again (a restarted requester) changes nothing.
    op.kill()
    await op.start()
    await client.patch(MACHINES, name, body, namespace=NS)
    await asyncio.sleep(5)
    assert [line.split()[1] for line in installs(host)] == ["no", "true", "true"]
    await client.delete(MACHINES, name, namespace=NS)

    await op.wait(lambda: machine_gone(client, name), "the Machine deleted", 90)


async def test_the_remediation_operator_may_change_only_the_request_annotation_of_a_machine(
    remediation_identity: ClientConfig,
    machine_writes_policy: None,
    client: Client,
    redfish_emulator: RedfishEmulator,
    bmc_system: FakeSystem,
    business: Client,
    simple_packages: None,
) -> None:
    """RBAC lets the operator patch Machines where it is bound; the admission policy holds it
    to the Reprovision request: not the spec (a Secret name, the address), labels, other
    annotations or finalizers."""
    name = "guarded-a"
    bmc = redfish_emulator.bmc(bmc_system, "guarded-a-bmc")
    await add_bmc_machine(client, business, name, "guarded", bmc)
    attempts: list[tuple[Object, str]] = [
        ({"spec": {"bmc": {"credentialsSecretRef": {"name": "elsewhere"}}}}, "spec"),
        ({"spec": {"address": "10.9.9.9"}}, "spec"),
        ({"metadata": {"labels": {TEST: "other"}}}, "labels"),
        ({"metadata": {"annotations": {"kokpit.io/skip-host-cleanup": "true"}}}, "not kokpit.io"),
        ({"metadata": {"finalizers": ["example.com/held"]}}, "finalizers"),
    ]
    async with Client(remediation_identity) as operator:
        for body, said in attempts:
            with pytest.raises(Forbidden) as refused:
                await operator.patch(MACHINES, name, body, namespace=NS)
            assert said in str(refused.value), str(refused.value)
        request = {"metadata": {"annotations": {REPROVISION_ANNOTATION: "u/0/t"}}}
        await operator.patch(MACHINES, name, request, namespace=NS)
    stored = await machine(client, name)
    assert stored["metadata"]["annotations"] == {REPROVISION_ANNOTATION: "u/0/t"}
    assert stored["spec"]["address"] == "10.0.0.1"
    assert stored["spec"]["bmc"]["credentialsSecretRef"] == {"name": "guarded-a-bmc"}
    await client.delete(MACHINES, name, namespace=NS)
