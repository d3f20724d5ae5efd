"""The Machine-Operator against the real meta-cluster, a real business cluster (process
runtime, with KWOK playing the kubelets) and real sshd hosts: packages installed, upgraded and
removed; failing steps, wrong host keys and unreachable hosts reported; nodes joined, gated by
their Condition ConfigMaps, drained and deleted. The crash tests run the operator as a process of
its own and SIGKILL it mid-install and mid-drain (see :mod:`tests.e2e.operators`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.business import BusinessCluster
from kokpit.api.conditions import get
from kokpit.api.v1alpha1 import CLUSTERS, MACHINES, RISK_POLICIES
from kokpit.api.v1alpha1 import MACHINE_PACKAGE_VERSIONS as PACKAGE_VERSIONS
from kokpit.controllers.machine import MachineOperator, MachineOptions, node_registrars, setup
from kokpit.local import Kubectl, LocalCluster
from kokpit.providers.machine import Executor
from kokpit.providers.machine.sim import SimExecutor
from kokpit.providers.machine.ssh import SSHExecutor
from kokpit.providers.machine.sshd import SimulatedHost
from kokpit.runtime import (
    AlreadyExists,
    Client,
    ClientConfig,
    Conflict,
    EventRecorder,
    Forbidden,
    LeaderElectionConfig,
    Manager,
    ManagerOptions,
    NotFound,
    Resource,
)
from kokpit.runtime.resources import CONFIGMAPS, EVENTS, LEASES, NODES, PODS, SECRETS
from tests.e2e.operators import (
    OperatorProcess,
    api_seconds,
    operator_process,
    overlapping,
    write_kubeconfig,
)
from tests.e2e.rbac import apply_rbac, bind_namespaced, operator_identity, service_account
from tests.e2e.support import until

pytestmark = pytest.mark.usefixtures("kokpit_crds", "condition_reports_policy")
NS = "machines-e2e"
#: The ServiceAccounts (in NS) that play the operators reporting readiness gates.
NETWORK, STORAGE = "network-operator", "storage-operator"
Object = dict[str, Any]


@pytest.fixture
def hosts(ssh_hosts: list[SimulatedHost]) -> list[SimulatedHost]:
    """The session's sshd hosts, running, with empty roots."""
    for host in ssh_hosts:
        host.start()
        for child in host.root.iterdir():
            _remove(child)
    return ssh_hosts


class Operator:
    """The Machine-Operator in this process (the crash tests run it as a process of its own,
    :func:`machine_operator`): leader elected on its Lease, like a deployed one, with the
    executors a test enables (the ``sim`` executor is opt-in, as in ``kokpit operator
    machine``)."""

    def __init__(
        self,
        config: ClientConfig,
        executors: tuple[str, ...] = ("ssh", "sim"),
        kwok_nodes: tuple[str, ...] = ("ssh", "sim"),
    ) -> None:
        self.config = config
        self.enabled = executors
        #: The test hosts run no kubelet: by default their Nodes are registered for KWOK.
        self.kwok_nodes = kwok_nodes
        self.sim = SimExecutor()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.client = Client(self.config)
        election = LeaderElectionConfig("kokpit-system", "kokpit-machine-operator", "e2e")
        manager = Manager(self.client, ManagerOptions(leader_election=election, health_port=None))
        self.recorder = recorder = EventRecorder(
            self.client, "kokpit.io/machine-operator", "test", min_update_interval=0
        )
        self.ssh = SSHExecutor(connect_timeout=3)
        available: dict[str, Executor] = {"ssh": self.ssh, "sim": self.sim}
        executors = {name: available[name] for name in self.enabled}
        options = MachineOptions(min_backoff=0.5, max_backoff=3, retry_interval=1)
        registrars = node_registrars(executors, kwok=set(self.kwok_nodes))
        self.reconciler: MachineOperator = setup(manager, executors, recorder, options, registrars)
        self.task = asyncio.create_task(manager.start())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.reconciler.close()
        await self.ssh.close()
        await self.recorder.close()
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
    await op.stop()


@pytest.fixture
async def machine_operator(
    identity: ClientConfig, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    """The operator as a process of its own (``kokpit operator machine``), with the
    permissions of config/rbac/machine-operator.yaml, for tests that SIGKILL it."""
    kubeconfig = write_kubeconfig(identity, tmp_path / "machine-operator.kubeconfig")
    args = ["--kwok-nodes", "ssh"]  # the test hosts run no kubelet
    with operator_process("machine", kubeconfig, tmp_path / "machine-operator.log", args) as op:
        await op.start()
        yield op


@pytest.fixture
async def business(biz: BusinessCluster) -> AsyncIterator[Client]:
    async with Client(ClientConfig.from_kubeconfig(biz.kubeconfig)) as c:
        yield c


# -- manifests ------------------------------------------------------------------------------

STATE = '"$KOKPIT_ROOT/opt/kokpit"'
RUNS = f"{STATE}/runs.log"


def timed(action: str) -> str:
    """Script lines that log when this run of a step starts and, on exit, when it ends, with
    the shell's pid to pair the two: from them a test sees how often a step ran and whether
    two runs overlapped (see :func:`runs`)."""
    run = f'"$KOKPIT_PACKAGE {action} $KOKPIT_VERSION $$ $(date +%s.%N)"'
    return f"echo start {run} >> {RUNS}\ntrap 'echo end {run} >> {RUNS}' EXIT\n"


def package(name: str, version: str, kind: str = "Other", install: str = "") -> Object:
    """A script package that records every step in the host's steps.log, and the start and
    end of every install and remove in its runs.log."""
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
                    "run": f"mkdir -p {STATE}\n{timed('install')}"
                    f"{log.replace('$0', 'install')}\n{install}\n"
                    f'echo "$KOKPIT_VERSION" > {version_file}\n'
                    f'echo "$KOKPIT_CONFIG_GREETING" > {STATE}/"$KOKPIT_PACKAGE".config',
                    "timeoutSeconds": 30,
                },
                "remove": {
                    "run": f"{timed('remove')}{log.replace('$0', 'remove')}\nrm -f {version_file}"
                },
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
    return host.ssh_secret(NS, name, known_hosts=known_hosts)


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


@dataclass
class Run:
    """One run of a package's install or remove on a host, from its runs.log."""

    package: str
    action: str
    version: str
    start: float
    #: None while it runs (or if it was killed before its exit trap).
    end: float | None = None


def runs(host: SimulatedHost) -> list[Run]:
    """Every install and remove run on ``host``, in the order they started."""
    path = host.root / "opt/kokpit/runs.log"
    found: list[Run] = []
    open_runs: dict[str, Run] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        edge, name, action, version, pid, at = line.split()
        if edge == "start":
            open_runs[pid] = Run(name, action, version, float(at))
            found.append(open_runs[pid])
        else:
            open_runs.pop(pid).end = float(at)
    return sorted(found, key=lambda r: r.start)


def ran(host_runs: list[Run], name: str, action: str) -> list[Run]:
    return [r for r in host_runs if (r.package, r.action) == (name, action)]


def concurrent_runs(host_runs: list[Run]) -> dict[str, list[tuple[Run, Run]]]:
    """Per package, the runs of its steps that overlapped in time (a run without an end
    overlaps everything after its start)."""
    clashes: dict[str, list[tuple[Run, Run]]] = {}
    for name in {r.package for r in host_runs}:
        mine = [r for r in host_runs if r.package == name]
        by_interval = {(r.start, math.inf if r.end is None else r.end): r for r in mine}
        pairs = overlapping(list(by_interval))
        if pairs:
            clashes[name] = [(by_interval[a], by_interval[b]) for a, b in pairs]
    return clashes


async def events_of(client: Client, name: str) -> list[str]:
    found = await client.list(EVENTS, namespace=NS, field_selector=f"regarding.name={name}")
    return [e.get("reason", "") for e in found.items]


async def has_event(client: Client, name: str, reason: str) -> bool:
    return reason in await events_of(client, name)


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
    # The Events are recorded after the status is written: wait for them, not just look.
    await until("a StepFailed Event", lambda: has_event(client, "flaky", "StepFailed"), 10)
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


def gate(type_: str, reporter: str, mode: str = "Continuous") -> Object:
    """A readiness gate owned by the ServiceAccount ``reporter`` of NS."""
    return {"conditionType": type_, "mode": mode, "reporter": {"namespace": NS, "name": reporter}}


def key(reporter: str) -> str:
    """The one key of a Condition ConfigMap that ``reporter`` may write."""
    return f"{NS}.{reporter}"


def gate_report(type_: str, status: str, message: str = "by test") -> str:
    return json.dumps([{"type": type_, "status": status, "reason": "Probed", "message": message}])


async def report(client: Client, name: str, key: str, value: str) -> None:
    """What another operator does: apply its key of the node's Condition ConfigMap."""
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


@pytest.fixture(scope="module")
def reporter_configs(
    kubectl: Kubectl, local_cluster: LocalCluster, biz: BusinessCluster
) -> dict[str, ClientConfig]:
    """Credentials of the reporters' ServiceAccounts, bound to the reporter role of
    config/rbac/node-condition-reporter.yaml in NS."""
    apply_rbac(kubectl, "node-condition-reporter")
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    configs = {}
    for name in (NETWORK, STORAGE):
        kubectl.run(
            "create",
            "rolebinding",
            f"{name}-reports",
            "-n",
            NS,
            "--clusterrole=kokpit-node-condition-reporter",
            f"--serviceaccount={NS}:{name}",
        )
        configs[name] = service_account(kubectl, admin, NS, name)
    return configs


@pytest.fixture
async def reporters(reporter_configs: dict[str, ClientConfig]) -> AsyncIterator[dict[str, Client]]:
    """A client per reporter ServiceAccount."""
    async with contextlib.AsyncExitStack() as stack:
        yield {
            name: await stack.enter_async_context(Client(config))
            for name, config in reporter_configs.items()
        }


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
    operator: Operator,
    client: Client,
    business: Client,
    biz: BusinessCluster,
    reporters: dict[str, Client],
) -> None:
    gates = [gate("example.com/NetworkReady", NETWORK), gate("DiskReady", STORAGE, "Bootstrap")]
    net, disk = reporters[NETWORK], reporters[STORAGE]
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
    await report(net, "gated", key(NETWORK), gate_report("example.com/NetworkReady", "True"))
    obj = await wait_machine(
        client, "gated", lambda o: condition(o, "example.com/NetworkReady").get("status") == "True"
    )
    assert condition(obj, "ReadinessGatesPassed")["status"] == "False"
    assert (
        f"DiskReady is not reported by {key(STORAGE)}"
        in condition(obj, "ReadinessGatesPassed")["message"]
    )
    await asyncio.sleep(2)
    pod = await business.get(PODS, "waits-for-gates", namespace="default")
    assert not pod["spec"].get("nodeName"), "a pod was placed on a gated node"
    # The last gate passes: the taint goes within seconds, and the pod is placed.
    await report(disk, "gated", key(STORAGE), gate_report("DiskReady", "True"))
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
    await report(disk, "gated", key(STORAGE), gate_report("DiskReady", "False"))
    await wait_node(business, "gated", lambda n: condition(n, "DiskReady").get("status") == "False")
    assert not tainted(await business.get(NODES, "gated"))
    # ...a Continuous one does, and KWOK keeps its Ready condition through all of it.
    await report(net, "gated", key(NETWORK), gate_report("example.com/NetworkReady", "False"))
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


async def test_a_gate_taint_removed_by_hand_is_put_back_within_seconds(
    operator: Operator, client: Client, business: Client
) -> None:
    """Drift in a business cluster is seen through the cluster cache's Node watch, not at the
    next recheck (600 s)."""
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-node", package("kubelet", "1.36.3", kind="Kubelet")),
        field_manager="test",
    )
    gates = [gate("example.com/NetworkReady", NETWORK)]
    await create_machine(client, "drifty", "e2e-node", gates=gates)  # never reported
    await wait_machine(client, "drifty", lambda o: bool(o.get("status", {}).get("nodeName")))
    await wait_node(business, "drifty", tainted)
    for _ in range(2):  # twice: the second time, the operator has published this verdict
        patched = await untaint(business, "drifty")
        assert not tainted(patched)
        took = await wait_node(business, "drifty", tainted)
        assert took < 5, f"the taint came back after {took:.1f} s"
    await delete_machine(client, "drifty")


async def untaint(business: Client, name: str) -> Object:
    """Remove the not-ready taint by hand, as a person would: on the Node as read (its
    resourceVersion a precondition), again on a Conflict (KWOK's heartbeats change the Node)."""
    while True:
        node = await business.get(NODES, name)
        untainted = [t for t in node["spec"]["taints"] if t["key"] != "kokpit.io/not-ready"]
        try:
            return await business.patch(
                NODES,
                name,
                {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                 "spec": {"taints": untainted}},
            )  # fmt: skip
        except Conflict:
            continue


def machine_where(
    client: Client, name: str, done: Callable[[Object], bool]
) -> Callable[[], Awaitable[Object | None]]:
    """A check for :meth:`OperatorProcess.wait`: the Machine once ``done`` holds for it."""

    async def check() -> Object | None:
        obj = await client.get(MACHINES, name, namespace=NS)
        return obj if done(obj) else None

    return check


def ended(host: SimulatedHost) -> Callable[[], Awaitable[list[Run] | None]]:
    """A check: the host's runs once every one has ended (an orphan of a killed operator
    ends on its own)."""

    async def check() -> list[Run] | None:
        found = runs(host)
        return found if all(r.end is not None for r in found) else None

    return check


async def test_the_operator_sigkilled_mid_install_finishes_the_step_once_restarted(
    machine_operator: OperatorProcess, client: Client, hosts: list[SimulatedHost]
) -> None:
    op, host = machine_operator, hosts[3]
    slow = package("containerd", "2.0", install="sleep 4")
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-slow", package("base", "1"), slow, package("tail", "1")),
        field_manager="test",
    )
    await create_machine(client, "crash", "e2e-slow", host)

    async def installing() -> Run | None:
        return next(iter(ran(runs(host), "containerd", "install")), None)

    # The risky moment: containerd's install script has started on the host.
    interrupted = await op.wait(installing, "containerd's install to start on the host", 90)
    op.kill()
    assert ran(runs(host), "containerd", "install")[0].end is None, "killed mid-step"
    obj = await client.get(MACHINES, "crash", namespace=NS)
    intent = obj["status"].get("lastOperation") or {}
    assert (intent.get("package"), intent.get("step"), intent.get("result")) == (
        "containerd",
        "install",
        "Running",
    ), op.explain(f"the intent is not in the API server: {intent}")
    assert api_seconds(intent["startedAt"]) <= interrupted.start, "recorded before the step started"

    await op.start()
    obj = await op.wait(machine_where(client, "crash", is_ready), "Ready after the restart", 90)
    host_runs = await op.wait(ended(host), "every step run on the host to end", 30)
    clashes = concurrent_runs(host_runs)
    assert not clashes, op.explain(f"steps ran concurrently with themselves: {clashes}")
    assert len(ran(host_runs, "base", "install")) == 1  # done before the crash: not repeated
    assert 1 <= len(ran(host_runs, "containerd", "install")) <= 2  # maybe again, never skipped
    assert len(ran(host_runs, "tail", "install")) == 1  # after it: not skipped
    order = [r.package for r in host_runs]
    assert (order[0], order[-1]) == ("base", "tail"), f"runs in order: {order}"
    assert installed(host, "containerd") == "2.0"
    assert [p["version"] for p in obj["status"]["packages"]] == ["1", "2.0", "1"]
    await delete_machine(client, "crash")


def guarded_workload(node: str) -> list[Object]:
    """Two pods that only fit ``node``, and a budget that lets neither go."""
    labels = {"app": "guarded"}
    return [
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
                        "nodeSelector": {"kubernetes.io/hostname": node},
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


async def reporting_instances(client: Client, name: str) -> set[str]:
    """Who reported the Events about Machine ``name`` so far (each operator process reports
    as an identity of its own)."""
    events = await client.list(EVENTS, namespace=NS, field_selector=f"regarding.name={name}")
    return {str(e.get("reportingInstance")) for e in events.items}


async def test_the_operator_sigkilled_mid_drain_deletes_the_machine_once_restarted(
    machine_operator: OperatorProcess,
    client: Client,
    business: Client,
    biz: BusinessCluster,
    hosts: list[SimulatedHost],
) -> None:
    op, host = machine_operator, hosts[2]
    await client.apply(
        PACKAGE_VERSIONS,
        package_version(
            "e2e-drain",
            package("containerd", "2.0"),
            package("kubelet", "1.36.3", kind="Kubelet"),
        ),
        field_manager="test",
    )
    await create_machine(client, "drained", "e2e-drain", host)
    await op.wait(machine_where(client, "drained", is_ready), "the Machine to be Ready", 90)
    biz.kubectl.apply(guarded_workload("drained"))

    async def running() -> list[Object]:
        pods = await business.list(PODS, namespace="default", label_selector="app=guarded")
        return [p for p in pods.items if p.get("status", {}).get("phase") == "Running"]

    async def both_running() -> bool:
        return len(await running()) == 2

    await op.wait(both_running, "the guarded pods to run", 60)
    await client.delete(MACHINES, "drained", namespace=NS)

    # The risky moment: the drain is under way, held back by the budget.
    def drain_blocked(o: Object) -> bool:
        return condition(o, "Ready").get("reason") == "DrainBlocked"

    await op.wait(machine_where(client, "drained", drain_blocked), "the drain to be held", 60)
    op.kill()
    killed = await reporting_instances(client, "drained")
    obj = await client.get(MACHINES, "drained", namespace=NS)
    assert obj["metadata"].get("deletionTimestamp")
    assert obj["metadata"].get("finalizers"), "the finalizer holds the Machine"
    assert obj["status"]["phase"] == "Deleting", op.explain(json.dumps(obj["status"]))
    assert "default/guarded-" in condition(obj, "Ready")["message"]
    assert (await business.get(NODES, "drained"))["spec"]["unschedulable"] is True  # cordoned
    assert len(await running()) == 2  # the budget held
    assert not [r for r in runs(host) if r.action == "remove"], "nothing removed while draining"

    await op.start()

    async def blocked_again() -> bool:
        """The fresh operator (an identity of its own in its Events) meets the budget too."""
        events = await client.list(EVENTS, namespace=NS, field_selector="regarding.name=drained")
        return any(
            e["reason"] == "DrainBlocked" and e.get("reportingInstance") not in killed
            for e in events.items
        )

    await op.wait(blocked_again, "the restarted operator to meet the budget", 60)
    assert len(await running()) == 2
    assert not [r for r in runs(host) if r.action == "remove"], "nothing removed while draining"

    biz.kubectl.run("delete", "pdb", "guarded", "-n", "default")

    async def machine_gone() -> bool:
        try:
            await client.get(MACHINES, "drained", namespace=NS)
        except NotFound:
            return True
        return False

    await op.wait(machine_gone, "the Machine to be deleted once the budget allows", 90)
    with pytest.raises(NotFound):
        await business.get(NODES, "drained")
    host_runs = await op.wait(ended(host), "every step run on the host to end", 30)
    clashes = concurrent_runs(host_runs)
    assert not clashes, op.explain(f"steps ran concurrently with themselves: {clashes}")
    assert [(r.package, r.action) for r in host_runs] == [
        ("containerd", "install"),
        ("kubelet", "install"),
        ("kubelet", "remove"),  # the last installed first, each exactly once
        ("containerd", "remove"),
    ], op.explain(f"runs on the host: {host_runs}")
    assert installed(host, "containerd") is None
    assert installed(host, "kubelet") is None
    biz.kubectl.run("delete", "deployment", "guarded", "-n", "default")


async def test_a_reporter_may_patch_condition_configmaps_and_nothing_else(
    operator: Operator, client: Client, reporters: dict[str, Client]
) -> None:
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-node", package("kubelet", "1.36.3", kind="Kubelet")),
        field_manager="test",
    )
    await create_machine(client, "reported", "e2e-node", gates=[gate("DiskReady", STORAGE)])
    await wait_machine(client, "reported", lambda o: bool(o.get("status", {}).get("nodeName")))
    reporter = reporters[STORAGE]
    await report(reporter, "reported", key(STORAGE), gate_report("DiskReady", "True"))
    await wait_machine(client, "reported", is_ready)
    with pytest.raises(Forbidden):  # cannot invent a node's ConfigMap
        await report(reporter, "no-such-machine", key(STORAGE), gate_report("DiskReady", "True"))
    with pytest.raises(Forbidden):
        await reporter.get(SECRETS, "reported", namespace=NS)
    await delete_machine(client, "reported")


async def refused(write: Awaitable[Any]) -> str:
    """The API server's message for a write that admission must refuse."""
    with pytest.raises(Forbidden) as refusal:
        await write
    return refusal.value.message


async def test_a_reporter_changes_only_its_own_key_of_a_condition_configmap(
    operator: Operator, client: Client, reporters: dict[str, Client]
) -> None:
    """The admission policy of config/admission, in the real API server: a reporter with the
    reporter role (patch on every ConfigMap) cannot create, change or delete another's key,
    nor take the ConfigMap out of the policy; nobody but a ServiceAccount writes a key."""
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-node", package("kubelet", "1.36.3", kind="Kubelet")),
        field_manager="test",
    )
    gates = [gate("example.com/NetworkReady", NETWORK), gate("DiskReady", STORAGE)]
    await create_machine(client, "guarded", "e2e-node", gates=gates)
    await wait_machine(client, "guarded", lambda o: bool(o.get("status", {}).get("nodeName")))
    net, disk = reporters[NETWORK], reporters[STORAGE]
    theirs = gate_report("example.com/NetworkReady", "False")
    ours = gate_report("DiskReady", "True")

    def patch(c: Client, body: Object) -> Awaitable[Object]:
        return c.patch(CONFIGMAPS, "guarded", body, namespace=NS)

    # Another's key: not created, changed, nor deleted; the message says which key is whose.
    message = await refused(report(disk, "guarded", key(NETWORK), theirs))
    assert f"a reporter may change only its own report, the key {key(STORAGE)}" in message
    assert f"not {key(NETWORK)}" in message
    await report(net, "guarded", key(NETWORK), theirs)
    await refused(patch(disk, {"data": {key(NETWORK): gate_report("example.com/X", "True")}}))
    await refused(patch(disk, {"data": {key(NETWORK): None}}))
    # Its own key beside another's in one request: refused whole.
    await refused(patch(disk, {"data": {key(STORAGE): ours, key(NETWORK): ours}}))
    # The label keeps the ConfigMap under the policy: it cannot be removed or changed, alone
    # or with a write of another's key (the policy judges the object as it was, too).
    labels: Object = {"kokpit.io/node-conditions": None}
    message = await refused(patch(disk, {"metadata": {"labels": labels}}))
    assert "kokpit.io/node-conditions=true" in message
    await refused(patch(disk, {"metadata": {"labels": labels}, "data": {key(NETWORK): ours}}))
    await refused(patch(disk, {"metadata": {"labels": {"kokpit.io/node-conditions": "false"}}}))
    # Made immutable, no reporter could update its report again.
    assert "immutable" in await refused(patch(disk, {"immutable": True}))
    # A person (here: the cluster admin) writes no key either; metadata is fine.
    message = await refused(patch(client, {"data": {key(STORAGE): ours}}))
    assert "only a ServiceAccount may write a report" in message
    await patch(client, {"metadata": {"annotations": {"example.com/note": "checked"}}})
    # The reporter can still write and remove its own key.
    await report(disk, "guarded", key(STORAGE), ours)
    await patch(disk, {"data": {key(STORAGE): None}})
    await report(disk, "guarded", key(STORAGE), ours)
    configmap = await client.get(CONFIGMAPS, "guarded", namespace=NS)
    assert configmap["data"] == {key(NETWORK): theirs, key(STORAGE): ours}
    assert configmap["metadata"]["labels"] == {"kokpit.io/node-conditions": "true"}
    assert not configmap.get("immutable")
    await delete_machine(client, "guarded")


async def test_only_its_own_reporter_passes_a_gate(
    operator: Operator, client: Client, business: Client, reporters: dict[str, Client]
) -> None:
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-node", package("kubelet", "1.36.3", kind="Kubelet")),
        field_manager="test",
    )
    gates = [gate("example.com/NetworkReady", NETWORK)]
    await create_machine(client, "owned", "e2e-node", gates=gates)
    await wait_machine(client, "owned", lambda o: bool(o.get("status", {}).get("nodeName")))
    net, disk = reporters[NETWORK], reporters[STORAGE]

    def says(text: str) -> Callable[[Object], bool]:
        return lambda o: text in condition(o, "ReadinessGatesPassed").get("message", "")

    # The storage operator reports the network's gate True under its own key (which the
    # policy lets it write): ignored, and the Machine says so.
    impostor = gate_report("example.com/NetworkReady", "True", message="impostor")
    await report(disk, "owned", key(STORAGE), impostor)
    ignored = f"{key(STORAGE)} reports example.com/NetworkReady, which only {key(NETWORK)} may"
    obj = await wait_machine(client, "owned", says(ignored))
    assert condition(obj, "ReadinessGatesPassed")["status"] == "False"
    assert condition(obj, "example.com/NetworkReady")["status"] == "Unknown"
    # A type with a trailing newline is no condition type (re.match with "$" took it).
    await report(net, "owned", key(NETWORK), gate_report("example.com/NetworkReady\n", "True"))
    problem = f'{key(NETWORK)}[0]: "example.com/NetworkReady\\n" is not a condition type'
    obj = await wait_machine(client, "owned", says(problem))
    assert not is_ready(obj)
    node = await business.get(NODES, "owned")
    assert tainted(node)
    types = {c["type"] for c in node["status"].get("conditions") or []}
    assert not {"example.com/NetworkReady", "example.com/NetworkReady\n"} & types
    # Its own reporter passes it: the taint goes, and the node shows the owner's report.
    await report(net, "owned", key(NETWORK), gate_report("example.com/NetworkReady", "True"))
    await wait_node(business, "owned", lambda n: not tainted(n))
    node = await business.get(NODES, "owned")
    assert condition(node, "example.com/NetworkReady")["message"] == "by test"
    obj = await wait_machine(client, "owned", is_ready)
    assert condition(obj, "example.com/NetworkReady")["message"] == "by test"
    assert ignored in condition(obj, "ReadinessGatesPassed")["message"]
    await delete_machine(client, "owned")


# -- what kokpit did not create, and deletes that cannot finish ------------------------------


async def test_a_configmap_or_node_of_the_machines_name_that_is_not_its_own_is_left_alone(
    operator: Operator, client: Client, business: Client
) -> None:
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-owned", package("kubelet", "1.36.3", kind="Kubelet")),
        field_manager="test",
    )
    theirs: Object = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"mine": "yes"}}
    theirs["metadata"] = {"name": "squatted-cm", "namespace": NS}
    await client.create(CONFIGMAPS, theirs)
    await business.create(
        NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "squatted-node"}}
    )
    await create_machine(client, "squatted-cm", "e2e-owned")
    await create_machine(client, "squatted-node", "e2e-owned")
    obj = await wait_machine(
        client,
        "squatted-cm",
        lambda o: condition(o, "NodeJoined").get("reason") == "ConditionConfigMapTaken",
    )
    assert "not owned by this Machine" in condition(obj, "NodeJoined")["message"]
    obj = await wait_machine(
        client,
        "squatted-node",
        lambda o: condition(o, "NodeJoined").get("reason") == "NodeNameTaken",
    )
    assert "was not registered for this Machine" in condition(obj, "NodeJoined")["message"]
    for name in ("squatted-cm", "squatted-node"):
        await delete_machine(client, name)
    cm = await client.get(CONFIGMAPS, "squatted-cm", namespace=NS)
    assert cm["data"] == {"mine": "yes"}
    assert not cm["metadata"].get("ownerReferences")
    node = await business.get(NODES, "squatted-node")  # neither drained nor deleted
    assert not node.get("spec", {}).get("unschedulable")
    await business.delete(NODES, "squatted-node")
    await client.delete(CONFIGMAPS, "squatted-cm", namespace=NS)


async def test_a_drain_gives_up_after_the_machines_drain_timeout(
    operator: Operator, client: Client, business: Client, biz: BusinessCluster
) -> None:
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-node", package("kubelet", "1.36.3", kind="Kubelet")),
        field_manager="test",
    )
    obj = machine("impatient", "e2e-node")
    obj["spec"]["drainTimeoutSeconds"] = 3
    await client.create(MACHINES, obj)
    await wait_machine(client, "impatient", is_ready)
    labels = {"app": "pinned"}
    biz.kubectl.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "pinned", "namespace": "default", "labels": labels},
                "spec": {
                    "nodeName": "impatient",
                    "containers": [{"name": "c", "image": "busybox"}],
                },
            },
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "pinned", "namespace": "default"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
            },
        ]
    )
    started = time.monotonic()
    await delete_machine(client, "impatient")
    assert time.monotonic() - started >= 3, "the drain did not wait for its timeout"
    assert "DrainTimedOut" in await events_of(client, "impatient")
    with pytest.raises(NotFound):
        await business.get(NODES, "impatient")
    biz.kubectl.run("delete", "pdb,pod", "pinned", "-n", "default", "--wait=false")


async def test_package_removal_on_a_host_that_is_gone_can_be_skipped_or_timed_out(
    operator: Operator, client: Client, kubectl: Kubectl, hosts: list[SimulatedHost]
) -> None:
    await client.apply(
        PACKAGE_VERSIONS, package_version("e2e-gone", package("sysctl", "1")), field_manager="test"
    )
    skipped, timed = hosts[2], hosts[3]
    await create_machine(client, "gone-skip", "e2e-gone", skipped)
    obj = machine("gone-timeout", "e2e-gone", timed)
    obj["spec"]["hostCleanupTimeoutSeconds"] = 4
    await client.apply(SECRETS, ssh_secret("gone-timeout", timed), field_manager="test")
    await client.create(MACHINES, obj)
    for name in ("gone-skip", "gone-timeout"):
        await wait_machine(client, name, is_ready)
    skipped.stop()
    timed.stop()
    try:
        await client.delete(MACHINES, "gone-skip", namespace=NS)
        obj = await wait_machine(
            client, "gone-skip", lambda o: condition(o, "HostReachable").get("status") == "False"
        )
        assert obj["status"]["phase"] == "Deleting"  # waits for the host, as it should
        kubectl.run(
            "annotate", "machine", "-n", NS, "gone-skip", "kokpit.io/skip-host-cleanup=true"
        )
        await gone(client, MACHINES, "gone-skip", within=30)
        assert "HostCleanupSkipped" in await events_of(client, "gone-skip")
        started = time.monotonic()
        await delete_machine(client, "gone-timeout")
        assert "HostCleanupSkipped" in await events_of(client, "gone-timeout")
        assert time.monotonic() - started < 30
    finally:
        skipped.start()
        timed.start()
    assert installed(skipped, "sysctl") == "1"  # left on the host, as the Event says


async def test_kokpits_identity_in_a_business_cluster_is_least_privilege(
    client: Client, biz: BusinessCluster
) -> None:
    """The Machine-Operator reaches the business cluster as ``kokpit:machine-operator``, with
    what joining, gating and draining need; the admin kubeconfig is for people."""
    secret = await client.get(SECRETS, "biz-kokpit-kubeconfig", namespace=NS)
    assert secret["type"] == "kokpit.io/kubeconfig"
    config = ClientConfig.from_kubeconfig_data(base64.b64decode(secret["data"]["value"]))
    async with Client(config) as kokpit:
        await kokpit.list(NODES)
        await kokpit.list(PODS, field_selector="spec.nodeName=nowhere")
        with pytest.raises(Forbidden):
            await kokpit.list(SECRETS, namespace="kube-system")
        with pytest.raises(Forbidden):
            await kokpit.create(
                CONFIGMAPS,
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
                namespace="default",
            )


async def test_config_keys_colliding_as_variables_are_refused_before_any_step(
    operator: Operator, client: Client, hosts: list[SimulatedHost]
) -> None:
    # The API server cannot afford a CEL rule over map keys: the operator refuses them.
    host = hosts[2]
    bad = package("runtime", "1")
    bad["config"] = {"log-level": "debug", "LOG.LEVEL": "info"}
    pv = package_version("e2e-colliding-config", bad)
    await client.apply(PACKAGE_VERSIONS, pv, field_manager="test")
    await create_machine(client, "colliding", "e2e-colliding-config", host)
    obj = await wait_machine(
        client,
        "colliding",
        lambda o: condition(o, "PackagesInstalled").get("reason") == "InvalidPackage",
    )
    refused = condition(obj, "PackagesInstalled")
    assert refused["status"] == "False"
    assert (
        "package 'runtime': config keys 'LOG.LEVEL', 'log-level' would all be the environment"
        " variable KOKPIT_CONFIG_LOG_LEVEL"
    ) in refused["message"]
    # Every step takes its package's lock on the host first: none ran, not even a check.
    assert not (host.root / "var").exists()
    await delete_machine(client, "colliding")


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
            lambda o: condition(o, "Ready").get("reason") == "ExecutorNotEnabled",
        )
        assert not condition(obj, "HostReachable"), "a set-up mistake, not an unreachable host"
        message = condition(obj, "Ready")["message"]
        assert "sim executor is not enabled" in message
        assert "--executors" in message
        assert not is_ready(obj)
        assert not obj["status"].get("nodeName")
        assert ssh_only.sim.hosts == {}, "no step ran on the disabled executor"
        with pytest.raises(NotFound):
            await business.get(NODES, "wants-sim")
    finally:
        await ssh_only.stop()
    # The admin follows the message: the same Machine now goes through.
    enabled = Operator(identity, executors=("ssh", "sim"))
    await enabled.start()
    try:
        await wait_machine(client, "wants-sim", is_ready)
        await delete_machine(client, "wants-sim")
    finally:
        await enabled.stop()


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


async def test_a_real_hosts_node_comes_from_its_own_kubelet_and_is_adopted(
    identity: ClientConfig, client: Client, business: Client, hosts: list[SimulatedHost]
) -> None:
    """With the product's default, an ssh host's Node is its kubelet's: the Machine waits
    for it, adopts it once it carries the Machine's address, and gates it; a Node of that
    name with another address is somebody else's."""
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-node", package("kubelet", "1.36.3", kind="Kubelet")),
        field_manager="test",
    )
    operator = Operator(identity, executors=("ssh",), kwok_nodes=())
    await operator.start()
    host, other = hosts[0], hosts[1]

    def kubelet_node(name: str, address: str) -> Object:
        """What the host's kubelet registers (not KWOK's to play: KWOK would put its own
        address on it)."""
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {"taints": [{"key": "kokpit.io/not-ready", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]},
        }

    try:
        await create_machine(client, "own-kubelet", "e2e-node", host)
        obj = await wait_machine(
            client,
            "own-kubelet",
            lambda o: condition(o, "NodeJoined").get("reason") == "NodeNotRegistered",
        )
        assert f"kubelet on {host.address}" in condition(obj, "NodeJoined")["message"]
        with pytest.raises(NotFound):  # kokpit registered nothing itself
            await business.get(NODES, "own-kubelet")
        node = await business.create(NODES, kubelet_node("own-kubelet", host.address))
        await business.patch(NODES, "own-kubelet", {"status": node["status"]}, subresource="status")
        obj = await wait_machine(client, "own-kubelet", is_ready)
        assert obj["status"]["nodeName"] == "own-kubelet"
        adopted = await business.get(NODES, "own-kubelet")
        assert adopted["metadata"]["annotations"]["kokpit.io/machine"] == f"{NS}/own-kubelet"
        assert adopted["metadata"]["labels"]["kokpit.io/test"] == "machines"
        assert not tainted(adopted), "no gates: the node is schedulable"

        await create_machine(client, "not-its-node", "e2e-node", other)
        stranger = await business.create(NODES, kubelet_node("not-its-node", "10.9.9.9"))
        await business.patch(
            NODES, "not-its-node", {"status": stranger["status"]}, subresource="status"
        )
        obj = await wait_machine(
            client,
            "not-its-node",
            lambda o: condition(o, "NodeJoined").get("reason") == "NodeNameTaken",
        )
        assert "does not report the Machine's address" in condition(obj, "NodeJoined")["message"]
        for name in ("own-kubelet", "not-its-node"):
            await delete_machine(client, name)
        with pytest.raises(NotFound):  # its own node goes with it
            await business.get(NODES, "own-kubelet")
        await business.get(NODES, "not-its-node")  # the stranger stays
        await business.delete(NODES, "not-its-node")
    finally:
        await operator.stop()


async def test_deleting_machines_asks_the_guard_and_waits_while_it_refuses(
    machine_operator: OperatorProcess,
    client: Client,
    business: Client,
    hosts: list[SimulatedHost],
) -> None:
    """Under one node deletion per ten minutes (a RiskPolicy), the operator (its own process,
    its shipped RBAC) deletes one of two Machines; the other stays, cordoned by nobody and with
    Ready=False GuardDenied, until the policy is gone."""
    op = machine_operator
    await client.apply(
        PACKAGE_VERSIONS,
        package_version("e2e-guarded", package("kubelet", "1.36.3", kind="Kubelet")),
        field_manager="test",
    )
    machines = {"del-a": hosts[0], "del-b": hosts[1]}
    for name, host in machines.items():
        await create_machine(client, name, "e2e-guarded", host)
    for name in machines:
        await op.wait(machine_where(client, name, is_ready), f"{name} Ready", 90)
    risk = {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "RiskPolicy",
        "metadata": {"name": "node-deletes"},
        "spec": {"actions": ["NodeDelete"], "rateLimit": {"count": 1, "windowSeconds": 600}},
    }
    await client.create(RISK_POLICIES, risk)
    try:
        await asyncio.sleep(1)  # the operator's informer sees the policy
        for name in machines:
            await client.delete(MACHINES, name, namespace=NS)

        async def one_gone_one_held() -> Object | None:
            left = []
            for name in machines:
                with contextlib.suppress(NotFound):
                    left.append(await client.get(MACHINES, name, namespace=NS))
            held = [o for o in left if condition(o, "Ready").get("reason") == "GuardDenied"]
            return held[0] if len(left) == 1 and held else None

        held = await op.wait(one_gone_one_held, "one deleted, one held", 90)
        name = held["metadata"]["name"]
        assert (
            "RiskPolicy node-deletes: rate limit: 1 of 1 grants"
            in condition(held, "Ready")["message"]
        )
        node = await business.get(NODES, name)
        assert not node["spec"].get("unschedulable"), "not even cordoned while held"
        assert not [r for r in runs(machines[name]) if r.action == "remove"]
    finally:
        await client.delete(RISK_POLICIES, "node-deletes")
    await gone(client, MACHINES, name, within=90)
    with pytest.raises(NotFound):
        await business.get(NODES, name)
