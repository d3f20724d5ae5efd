"""The Machine-Operator against the real meta-cluster, a real business cluster (process
runtime, with KWOK playing the kubelets) and real sshd hosts: packages installed, upgraded and
removed; failing steps, wrong host keys and unreachable hosts reported; nodes joined, gated by
their Condition ConfigMaps, drained and deleted; an operator killed mid-install."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kokpit.api.conditions import get
from kokpit.controllers.cluster import CLUSTERS
from kokpit.controllers.machine import (
    MACHINES,
    PACKAGE_VERSIONS,
    MachineOptions,
    MachineReconciler,
    setup,
)
from kokpit.local import Assets, Kubectl, LocalCluster
from kokpit.local.business import BusinessCluster, business_cluster
from kokpit.providers.machine import Executor
from kokpit.providers.machine.sim import SimExecutor
from kokpit.providers.machine.ssh import SSHExecutor
from kokpit.runtime import (
    AlreadyExists,
    Client,
    ClientConfig,
    EventRecorder,
    Forbidden,
    LeaderElectionConfig,
    Manager,
    ManagerOptions,
    NotFound,
    Resource,
)
from kokpit.runtime.resources import CONFIGMAPS, EVENTS, LEASES, NODES, PODS, SECRETS
from tests.e2e.hosts import SimulatedHost
from tests.e2e.rbac import apply_rbac, bind_namespaced, operator_identity, service_account

pytestmark = pytest.mark.usefixtures("kokpit_crds")
NS = "machines-e2e"
Object = dict[str, Any]


@pytest.fixture(scope="module")
def biz(
    kubectl: Kubectl,
    assets: Assets,
    local_cluster: LocalCluster,
    tmp_path_factory: pytest.TempPathFactory,
    kokpit_crds: None,
) -> Iterator[BusinessCluster]:
    kubectl.run("create", "namespace", NS)
    try:
        with business_cluster(
            kubectl, assets, local_cluster.kubeconfig, tmp_path_factory.mktemp("biz"), NS
        ) as cluster:
            yield cluster
    finally:
        kubectl.run("delete", "namespace", NS, "--wait=false")


@pytest.fixture
def hosts(ssh_hosts: list[SimulatedHost]) -> list[SimulatedHost]:
    """The session's sshd hosts, running, with empty roots."""
    for host in ssh_hosts:
        host.start()
        for child in host.root.iterdir():
            _remove(child)
    return ssh_hosts


class Operator:
    """The Machine-Operator in this process, which a test can kill and start again: leader
    elected on its Lease, like a deployed one, with the executors a test enables (the ``sim``
    executor is opt-in, as in ``kokpit operator machine``)."""

    def __init__(self, config: ClientConfig, executors: tuple[str, ...] = ("ssh", "sim")) -> None:
        self.config = config
        self.enabled = executors
        self.sim = SimExecutor()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.client = Client(self.config)
        election = LeaderElectionConfig("kokpit-system", "kokpit-machine-operator", "e2e")
        manager = Manager(self.client, ManagerOptions(leader_election=election, health_port=None))
        recorder = EventRecorder(
            self.client, "kokpit.io/machine-operator", "test", min_update_interval=0
        )
        self.ssh = SSHExecutor(connect_timeout=3)
        available: dict[str, Executor] = {"ssh": self.ssh, "sim": self.sim}
        executors = {name: available[name] for name in self.enabled}
        options = MachineOptions(min_backoff=0.5, max_backoff=3, retry_interval=1)
        self.reconciler: MachineReconciler = setup(manager, executors, recorder, options)
        self.task = asyncio.create_task(manager.start())

    async def kill(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.reconciler.close()
        await self.ssh.close()
        await self.client.close()


@pytest.fixture
def identity(local_cluster: LocalCluster, kubectl: Kubectl, biz: BusinessCluster) -> ClientConfig:
    """The operator's service account, with exactly the permissions of
    config/rbac/machine-operator.yaml (its namespaced role bound in the Machines' namespace)."""
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    return operator_identity(kubectl, admin, "machine-operator", [NS])


@pytest.fixture
async def operator(identity: ClientConfig) -> AsyncIterator[Operator]:
    op = Operator(identity)
    await op.start()
    yield op
    await op.kill()


@pytest.fixture
async def business(biz: BusinessCluster) -> AsyncIterator[Client]:
    async with Client(ClientConfig.from_kubeconfig(biz.kubeconfig)) as c:
        yield c


# -- manifests ------------------------------------------------------------------------------

STATE = '"$KOKPIT_ROOT/opt/kokpit"'


def package(name: str, version: str, kind: str = "Other", install: str = "") -> Object:
    """A script package that records every step in the host's steps.log."""
    version_file = f'{STATE}/"$KOKPIT_PACKAGE".version'
    log = f'echo "$KOKPIT_PACKAGE $0 $KOKPIT_VERSION" >> {STATE}/steps.log'
    return {
        "name": name,
        "kind": kind,
        "version": version,
        "config": {"greeting": "hello world"},
        "install": {
            "script": {
                "check": {"run": f"cat {version_file} 2>/dev/null || true"},
                "install": {
                    "run": f"mkdir -p {STATE}\n{log.replace('$0', 'install')}\n{install}\n"
                    f'echo "$KOKPIT_VERSION" > {version_file}\n'
                    f'echo "$KOKPIT_CONFIG_GREETING" > {STATE}/"$KOKPIT_PACKAGE".config',
                    "timeoutSeconds": 30,
                },
                "remove": {"run": f"{log.replace('$0', 'remove')}\nrm -f {version_file}"},
                "verify": {"run": f'test "$(cat {version_file})" = "$KOKPIT_VERSION"'},
            }
        },
    }


def package_version(name: str, *packages: Object) -> Object:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "MachinePackageVersion",
        "metadata": {"name": name},
        "spec": {"packages": list(packages)},
    }


def ssh_secret(name: str, host: SimulatedHost, known_hosts: bytes | None = None) -> Object:
    data = {
        "username": host.username.encode(),
        "privateKey": host.private_key,
        "knownHosts": known_hosts if known_hosts is not None else host.known_hosts,
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def machine(
    name: str, pv: str, host: SimulatedHost | None = None, gates: list[Object] | None = None
) -> Object:
    spec: Object = {
        "clusterRef": {"name": "biz"},
        "packageVersion": pv,
        "readinessGates": gates or [],
        "nodeLabels": {"kokpit.io/test": "machines"},
    }
    if host is None:
        spec |= {"executor": "sim", "address": "10.0.0.1"}
    else:
        spec |= {"address": host.address, "port": host.port, "sshSecretRef": {"name": name}}
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


async def create_machine(
    client: Client, name: str, pv: str, host: SimulatedHost | None = None, **kw: Any
) -> None:
    if host is not None:
        await client.apply(SECRETS, ssh_secret(name, host), field_manager="test")
    await client.create(MACHINES, machine(name, pv, host, **kw))


async def wait_machine(
    client: Client,
    name: str,
    done: Callable[[Object], bool],
    within: float = 60,
    namespace: str = NS,
) -> Object:
    deadline = time.monotonic() + within
    obj: Object = {}
    while time.monotonic() < deadline:
        obj = await client.get(MACHINES, name, namespace=namespace)
        if done(obj):
            return obj
        await asyncio.sleep(0.2)
    raise AssertionError(f"machine {name} never got there: {json.dumps(obj.get('status'))}")


def condition(obj: Object, type_: str) -> Object:
    return get(obj.get("status", {}).get("conditions") or [], type_) or {}


def is_ready(obj: Object) -> bool:
    return condition(obj, "Ready").get("status") == "True"


def steps(host: SimulatedHost) -> list[str]:
    path = host.root / "opt/kokpit/steps.log"
    return path.read_text().splitlines() if path.exists() else []


def installed(host: SimulatedHost, name: str) -> str | None:
    path = host.root / f"opt/kokpit/{name}.version"
    return path.read_text().strip() if path.exists() else None


async def delete_machine(client: Client, name: str, namespace: str = NS) -> None:
    """Delete a Machine and wait until its finalizer has run and it is gone."""
    with contextlib.suppress(NotFound):
        await client.delete(MACHINES, name, namespace=namespace)
    await gone(client, MACHINES, name, within=60, namespace=namespace)


async def gone(
    client: Client, resource: Resource, name: str, within: float = 30, namespace: str = NS
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            await client.get(resource, name, namespace=namespace)
        except NotFound:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{resource} {name} is still there")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _remove(child)
        path.rmdir()
    else:
        path.unlink()


# -- tests ----------------------------------------------------------------------------------


async def test_packages_are_installed_upgraded_and_removed_on_real_hosts(
    operator: Operator,
    client: Client,
    business: Client,
    kubectl: Kubectl,
    hosts: list[SimulatedHost],
) -> None:
    v1 = package_version(
        "e2e-lifecycle-v1",
        package("sysctl", "1"),
        package("containerd", "1.7"),
        package("kubelet", "1.36.3", kind="Kubelet"),
    )
    v2 = package_version(
        "e2e-lifecycle-v2",
        package("containerd", "2.0"),
        package("kubelet", "1.36.3", kind="Kubelet"),
    )
    for pv in (v1, v2):
        await client.apply(PACKAGE_VERSIONS, pv, field_manager="test")
    a, b = hosts[0], hosts[1]
    await create_machine(client, "lifecycle-a", "e2e-lifecycle-v1", a)
    await create_machine(client, "lifecycle-b", "e2e-lifecycle-v1", b)
    for name, host in (("lifecycle-a", a), ("lifecycle-b", b)):
        obj = await wait_machine(client, name, is_ready)
        assert obj["status"]["phase"] == "Running"
        assert obj["status"]["nodeName"] == name
        assert [(p["name"], p["version"]) for p in obj["status"]["packages"]] == [
            ("sysctl", "1"),
            ("containerd", "1.7"),
            ("kubelet", "1.36.3"),
        ]
        assert steps(host) == [
            "sysctl install 1",
            "containerd install 1.7",
            "kubelet install 1.36.3",
        ]
        assert (host.root / "opt/kokpit/containerd.config").read_text() == "hello world\n"
        node = await business.get(NODES, name)
        assert node["metadata"]["labels"]["kokpit.io/test"] == "machines"
    # Upgrade one machine: containerd moves up, sysctl (dropped) is removed, kubelet stays.
    await client.patch(
        MACHINES, "lifecycle-a", {"spec": {"packageVersion": "e2e-lifecycle-v2"}}, namespace=NS
    )
    obj = await wait_machine(
        client,
        "lifecycle-a",
        lambda o: is_ready(o) and o["status"].get("packageVersion") == "e2e-lifecycle-v2",
    )
    assert steps(a)[3:] == ["sysctl remove 1", "containerd install 2.0"]
    assert installed(a, "sysctl") is None
    assert installed(a, "containerd") == "2.0"
    assert installed(b, "containerd") == "1.7"  # the other machine was not touched
    # Delete: the node is drained and deleted, the packages removed, the Machine goes.
    await delete_machine(client, "lifecycle-a")
    assert steps(a)[5:] == ["kubelet remove 1.36.3", "containerd remove 2.0"]
    with pytest.raises(NotFound):
        await business.get(NODES, "lifecycle-a")
    await gone(client, CONFIGMAPS, "lifecycle-a")  # the garbage collector follows the owner
    await delete_machine(client, "lifecycle-b")


async def test_a_failing_step_is_reported_with_its_stderr_retried_and_never_done(
    operator: Operator, client: Client, hosts: list[SimulatedHost]
) -> None:
    host = hosts[0]
    flaky = package(
        "runtime",
        "3.1",
        install=f"[ -f {STATE}/disk-replaced ] || "
        '{ echo "write /opt: no space left on device" >&2; exit 28; }',
    )
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-flaky", package("base", "1"), flaky),
        field_manager="test",
    )
    await create_machine(client, "flaky", "e2e-flaky", host)

    def failed(o: Object) -> bool:
        return condition(o, "PackagesInstalled").get("reason") == "StepFailed"

    obj = await wait_machine(client, "flaky", failed)
    message = condition(obj, "PackagesInstalled")["message"]
    assert "runtime" in message
    assert "no space left on device" in message
    assert "exited 28" in message
    operation = obj["status"]["lastOperation"]
    assert (operation["package"], operation["step"], operation["result"]) == (
        "runtime",
        "install",
        "Failed",
    )
    assert "no space left on device" in operation["message"]
    assert obj["status"].get("packageVersion") is None  # never reported as done
    assert not is_ready(obj)
    events = await client.list(EVENTS, namespace=NS, field_selector="regarding.name=flaky")
    assert any(e["reason"] == "StepFailed" for e in events.items)
    # Retried with backoff: several attempts, the earlier package installed once only.
    await asyncio.sleep(3)
    attempts = [s for s in steps(host) if s.startswith("runtime install")]
    assert len(attempts) >= 2
    assert steps(host).count("base install 1") == 1
    (host.root / "opt/kokpit/disk-replaced").touch()
    obj = await wait_machine(client, "flaky", is_ready, within=30)
    assert installed(host, "runtime") == "3.1"
    await delete_machine(client, "flaky")


async def test_a_wrong_host_key_is_refused_and_nothing_runs(
    operator: Operator, client: Client, hosts: list[SimulatedHost]
) -> None:
    target, other = hosts[0], hosts[1]
    # The other host's key, pinned for this address: what a man in the middle would present.
    forged = other.known_hosts.replace(
        f"[{other.address}]:{other.port}".encode(), f"[{target.address}]:{target.port}".encode()
    )
    await client.apply(
        PACKAGE_VERSIONS, package_version("e2e-plain", package("base", "1")), field_manager="test"
    )
    await client.apply(
        SECRETS, ssh_secret("mitm", target, known_hosts=forged), field_manager="test"
    )
    await client.create(MACHINES, machine("mitm", "e2e-plain", target))
    obj = await wait_machine(
        client, "mitm", lambda o: condition(o, "HostReachable").get("reason") == "HostKeyMismatch"
    )
    assert condition(obj, "HostReachable")["status"] == "False"
    assert target.address in condition(obj, "HostReachable")["message"]
    assert obj["status"]["phase"] == "Failed"
    assert steps(target) == []
    await client.delete(MACHINES, "mitm", namespace=NS)
    # Deleting needs the host too (its packages are removed): fix the Secret to let it go.
    await client.apply(SECRETS, ssh_secret("mitm", target), field_manager="test")
    await delete_machine(client, "mitm")


async def test_an_unreachable_host_is_reported_and_picked_up_when_it_returns(
    operator: Operator, client: Client, hosts: list[SimulatedHost]
) -> None:
    host = hosts[2]
    host.stop()
    await client.apply(
        PACKAGE_VERSIONS, package_version("e2e-plain", package("base", "1")), field_manager="test"
    )
    await create_machine(client, "away", "e2e-plain", host)
    obj = await wait_machine(
        client, "away", lambda o: condition(o, "HostReachable").get("reason") == "Unreachable"
    )
    assert f"{host.address}:{host.port}" in condition(obj, "HostReachable")["message"]
    assert obj["status"]["phase"] == "Provisioning"
    host.start()
    await wait_machine(client, "away", is_ready, within=30)
    assert (
        condition(await client.get(MACHINES, "away", namespace=NS), "HostReachable")["status"]
        == "True"
    )
    await delete_machine(client, "away")


def gate_report(type_: str, status: str) -> str:
    return json.dumps({"type": type_, "status": status, "reason": "Probed", "message": "by test"})


async def report(client: Client, name: str, key: str, value: str) -> None:
    """What another operator does: apply its own key of the node's Condition ConfigMap."""
    await client.apply(
        CONFIGMAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NS},
            "data": {key: value},
        },
        field_manager=f"reporter-{key}",
    )


def tainted(node: Object) -> bool:
    return any(t["key"] == "kokpit.io/not-ready" for t in node["spec"].get("taints") or [])


async def wait_node(
    business: Client, name: str, done: Callable[[Object], bool], within: float = 30
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        with contextlib.suppress(NotFound):
            if done(await business.get(NODES, name)):
                return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"node {name} never got there")


async def test_readiness_gates_keep_the_node_unschedulable_until_every_gate_passes(
    operator: Operator, client: Client, business: Client, biz: BusinessCluster
) -> None:
    gates = [
        {"conditionType": "example.com/NetworkReady", "mode": "Continuous"},
        {"conditionType": "DiskReady", "mode": "Bootstrap"},
    ]
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-node", package("kubelet", "1.36.3", kind="Kubelet")),
        field_manager="test",
    )
    await create_machine(client, "gated", "e2e-node", gates=gates)  # a simulated host
    obj = await wait_machine(client, "gated", lambda o: bool(o.get("status", {}).get("nodeName")))
    await wait_node(business, "gated", lambda n: condition(n, "Ready").get("status") == "True")
    node = await business.get(NODES, "gated")
    assert tainted(node)
    # Pods that fit only this node: the real scheduler must keep them Pending.
    biz.kubectl.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "waits-for-gates", "namespace": "default"},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": "gated"},
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
                    "containers": [{"name": "c", "image": "busybox"}],
                },
            }
        ]
    )
    await report(client, "gated", "net", gate_report("example.com/NetworkReady", "True"))
    obj = await wait_machine(
        client, "gated", lambda o: condition(o, "example.com/NetworkReady").get("status") == "True"
    )
    assert condition(obj, "ReadinessGatesPassed")["status"] == "False"
    assert "DiskReady is not reported" in condition(obj, "ReadinessGatesPassed")["message"]
    await asyncio.sleep(2)
    pod = await business.get(PODS, "waits-for-gates", namespace="default")
    assert not pod["spec"].get("nodeName"), "a pod was placed on a gated node"
    # The last gate passes: the taint goes within seconds, and the pod is placed.
    await report(client, "gated", "disk", gate_report("DiskReady", "True"))
    took = await wait_node(business, "gated", lambda n: not tainted(n))
    assert took < 5
    node = await business.get(NODES, "gated")
    types = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert types["example.com/NetworkReady"] == "True"
    assert types["DiskReady"] == "True"
    assert types["Ready"] == "True"  # KWOK's condition is left alone
    await wait_machine(client, "gated", is_ready)
    deadline = time.monotonic() + 30
    while not (await business.get(PODS, "waits-for-gates", namespace="default"))["spec"].get(
        "nodeName"
    ):
        assert time.monotonic() < deadline, "the pod was not placed once the gates passed"
        await asyncio.sleep(0.2)
    # A Bootstrap gate turning False later does not gate the node again...
    await report(client, "gated", "disk", gate_report("DiskReady", "False"))
    await wait_node(business, "gated", lambda n: condition(n, "DiskReady").get("status") == "False")
    assert not tainted(await business.get(NODES, "gated"))
    # ...a Continuous one does, and KWOK keeps its Ready condition through all of it.
    await report(client, "gated", "net", gate_report("example.com/NetworkReady", "False"))
    took = await wait_node(business, "gated", tainted)
    assert took < 5
    node = await business.get(NODES, "gated")
    assert condition(node, "Ready")["status"] == "True"
    obj = await wait_machine(client, "gated", lambda o: not is_ready(o))
    assert condition(obj, "ReadinessGatesPassed")["reason"] == "GatesPending"
    biz.kubectl.run("delete", "pod", "waits-for-gates", "-n", "default", "--wait=false")
    await delete_machine(client, "gated")
    with pytest.raises(NotFound):
        await business.get(NODES, "gated")


async def test_the_operator_killed_mid_install_finishes_after_restart(
    operator: Operator, client: Client, hosts: list[SimulatedHost]
) -> None:
    host = hosts[3]
    slow = package("containerd", "2.0", install="sleep 4")
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-slow", package("base", "1"), slow, package("tail", "1")),
        field_manager="test",
    )
    await create_machine(client, "crash", "e2e-slow", host)

    def installing_containerd(o: Object) -> bool:
        op = o.get("status", {}).get("lastOperation") or {}
        return (op.get("package"), op.get("result")) == ("containerd", "Running")

    await wait_machine(client, "crash", installing_containerd)
    await asyncio.sleep(1)  # inside the step's script
    await operator.kill()
    await operator.start()
    obj = await wait_machine(client, "crash", is_ready, within=60)
    log = steps(host)
    assert log.count("base install 1") == 1  # done before the crash: checked, not repeated
    assert log.count("tail install 1") == 1  # after it: not skipped
    assert 1 <= log.count("containerd install 2.0") <= 2  # may have run again, never skipped
    assert installed(host, "containerd") == "2.0"
    assert [p["version"] for p in obj["status"]["packages"]] == ["1", "2.0", "1"]
    await delete_machine(client, "crash")


async def test_deleting_a_machine_drains_its_node_within_pod_disruption_budgets(
    operator: Operator, client: Client, business: Client, biz: BusinessCluster
) -> None:
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-node", package("kubelet", "1.36.3", kind="Kubelet")),
        field_manager="test",
    )
    await create_machine(client, "drained", "e2e-node")
    await wait_machine(client, "drained", is_ready)
    labels = {"app": "guarded"}
    biz.kubectl.apply(
        [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "guarded", "namespace": "default"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "nodeSelector": {"kubernetes.io/hostname": "drained"},
                            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
                            "containers": [{"name": "c", "image": "busybox"}],
                        },
                    },
                },
            },
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "guarded", "namespace": "default"},
                "spec": {"minAvailable": 2, "selector": {"matchLabels": labels}},
            },
        ]
    )

    async def running() -> list[Object]:
        pods = await business.list(PODS, namespace="default", label_selector="app=guarded")
        return [p for p in pods.items if p.get("status", {}).get("phase") == "Running"]

    deadline = time.monotonic() + 60
    while len(await running()) < 2:
        assert time.monotonic() < deadline, "the guarded pods never ran"
        await asyncio.sleep(0.5)
    await client.delete(MACHINES, "drained", namespace=NS)
    obj = await wait_machine(
        client, "drained", lambda o: condition(o, "Ready").get("reason") == "DrainBlocked"
    )
    assert "default/guarded-" in condition(obj, "Ready")["message"]
    node = await business.get(NODES, "drained")
    assert node["spec"]["unschedulable"] is True  # cordoned
    assert len(await running()) == 2  # the budget held
    biz.kubectl.run("delete", "pdb", "guarded", "-n", "default")
    await delete_machine(client, "drained")
    with pytest.raises(NotFound):
        await business.get(NODES, "drained")
    biz.kubectl.run("delete", "deployment", "guarded", "-n", "default")


async def test_a_reporter_may_patch_condition_configmaps_and_nothing_else(
    operator: Operator,
    client: Client,
    kubectl: Kubectl,
    local_cluster: LocalCluster,
) -> None:
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-node", package("kubelet", "1.36.3", kind="Kubelet")),
        field_manager="test",
    )
    await create_machine(client, "reported", "e2e-node", gates=[{"conditionType": "DiskReady"}])
    await wait_machine(client, "reported", lambda o: bool(o.get("status", {}).get("nodeName")))
    apply_rbac(kubectl, "node-condition-reporter")
    kubectl.run(
        "create",
        "rolebinding",
        "storage-reports",
        "-n",
        NS,
        "--clusterrole=kokpit-node-condition-reporter",
        f"--serviceaccount={NS}:storage-operator",
    )
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    async with Client(service_account(kubectl, admin, NS, "storage-operator")) as reporter:
        await report(reporter, "reported", "disk", gate_report("DiskReady", "True"))
        await wait_machine(client, "reported", is_ready)
        with pytest.raises(Forbidden):  # cannot invent a node's ConfigMap
            await report(reporter, "no-such-machine", "disk", gate_report("DiskReady", "True"))
        with pytest.raises(Forbidden):
            await reporter.get(SECRETS, "reported", namespace=NS)
    await delete_machine(client, "reported")


async def test_the_operators_identity_is_forbidden_what_it_does_not_need(
    identity: ClientConfig, client: Client
) -> None:
    other_lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "someone-else", "namespace": "kokpit-system"},
        "spec": {"holderIdentity": "someone"},
    }
    with contextlib.suppress(AlreadyExists):
        await client.create(LEASES, other_lease)
    async with Client(identity) as op:
        # What it needs works (so the refusals below are RBAC's, not a broken token)...
        with pytest.raises(NotFound):
            await op.get(SECRETS, "no-such-secret", namespace=NS)
        await op.list(CONFIGMAPS, label_selector="kokpit.io/node-conditions=true")
        # ...and what it does not need is refused.
        with pytest.raises(Forbidden):  # Secrets outside the Machines' namespaces
            await op.get(SECRETS, "any", namespace="kube-system")
        with pytest.raises(Forbidden):  # nor listing every Secret
            await op.list(SECRETS)
        with pytest.raises(Forbidden):  # ConfigMaps only where Machines are
            await op.create(
                CONFIGMAPS,
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "planted", "namespace": "kube-system"},
                },
            )
        lease = await client.get(LEASES, "someone-else", namespace="kokpit-system")
        lease["spec"]["holderIdentity"] = "kokpit-machine-operator"
        with pytest.raises(Forbidden):  # its own Lease only
            await op.replace(LEASES, lease)
        with pytest.raises(Forbidden):
            await op.get(LEASES, "kokpit-cluster-operator", namespace="kokpit-system")
        with pytest.raises(Forbidden):  # Clusters are read, never written
            await op.patch(CLUSTERS, "biz", {"metadata": {"labels": {"x": "y"}}}, namespace=NS)
    await client.delete(LEASES, "someone-else", namespace="kokpit-system")


async def test_a_machine_asking_for_a_disabled_executor_is_told_which_flag_enables_it(
    identity: ClientConfig, client: Client, business: Client
) -> None:
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-node", package("kubelet", "1.36.3", kind="Kubelet")),
        field_manager="test",
    )
    ssh_only = Operator(identity, executors=("ssh",))  # what `kokpit operator machine` runs
    await ssh_only.start()
    try:
        await create_machine(client, "wants-sim", "e2e-node")  # spec.executor: sim
        obj = await wait_machine(
            client,
            "wants-sim",
            lambda o: condition(o, "HostReachable").get("reason") == "ExecutorNotEnabled",
        )
        message = condition(obj, "HostReachable")["message"]
        assert "sim executor is not enabled" in message
        assert "--executors" in message
        assert not is_ready(obj)
        assert not obj["status"].get("nodeName")
        assert ssh_only.sim.hosts == {}, "no step ran on the disabled executor"
        with pytest.raises(NotFound):
            await business.get(NODES, "wants-sim")
    finally:
        await ssh_only.kill()
    # The admin follows the message: the same Machine now goes through.
    enabled = Operator(identity, executors=("ssh", "sim"))
    await enabled.start()
    try:
        await wait_machine(client, "wants-sim", is_ready)
        await delete_machine(client, "wants-sim")
    finally:
        await enabled.kill()


async def test_a_namespace_the_operator_is_not_bound_in_is_a_condition_naming_the_role(
    operator: Operator,
    client: Client,
    kubectl: Kubectl,
    namespace: str,
    hosts: list[SimulatedHost],
) -> None:
    host = hosts[1]
    await client.apply(
        PACKAGE_VERSIONS, package_version("e2e-plain", package("base", "1")), field_manager="test"
    )
    secret = ssh_secret("elsewhere", host)
    secret["metadata"]["namespace"] = namespace
    await client.apply(SECRETS, secret, field_manager="test")
    obj = machine("elsewhere", "e2e-plain", host)
    obj["metadata"]["namespace"] = namespace
    await client.create(MACHINES, obj)
    found = await wait_machine(
        client,
        "elsewhere",
        lambda o: condition(o, "HostReachable").get("reason") == "Forbidden",
        namespace=namespace,
    )
    message = condition(found, "HostReachable")["message"]
    assert f"may not read Secrets in namespace {namespace}" in message
    assert "kokpit-machine-operator-namespaced" in message
    assert steps(host) == []
    # The admin does what the message says, and the Machine goes through.
    bind_namespaced(kubectl, "machine-operator", namespace)
    await wait_machine(client, "elsewhere", is_ready, namespace=namespace)
    assert installed(host, "base") == "1"
    await delete_machine(client, "elsewhere", namespace=namespace)
