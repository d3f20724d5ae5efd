"""The Cluster-Operator with the process runtime: real business control planes, created,
upgraded, rolled back after a failed health check, deleted; and an upgrade finished by a fresh
operator after the one making it was SIGKILLed mid-step (the operator as a process of its own,
see :mod:`tests.e2e.operators`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import secrets
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from fixtures.business import stop_control_planes
from kokpit.api.v1alpha1 import CLUSTER_PACKAGE_VERSIONS as PACKAGE_VERSIONS
from kokpit.api.v1alpha1 import CLUSTERS, MACHINES, RISK_LEDGERS, RISK_POLICIES
from kokpit.api.v1alpha1.cluster import NAME_MAX
from kokpit.controllers.cluster import ClusterOptions, setup
from kokpit.local import Kubectl, LocalCluster
from kokpit.local.components import Layout
from kokpit.local.supervisor import Supervisor
from kokpit.local.versions import Release
from kokpit.providers.controlplane import ORDER, ControlPlaneRuntime
from kokpit.providers.controlplane.kubernetes import KubernetesRuntime
from kokpit.providers.controlplane.process import ProcessRuntime
from kokpit.providers.controlplane.releases import cluster_package
from kokpit.runtime import (
    Client,
    ClientConfig,
    EventRecorder,
    Forbidden,
    LeaderElectionConfig,
    Manager,
    ManagerOptions,
    NotFound,
)
from kokpit.runtime.resources import DEPLOYMENTS, EVENTS, LEASES, SECRETS, SERVICES
from tests.e2e.operators import (
    OperatorProcess,
    api_seconds,
    operator_process,
    overlapping,
    write_kubeconfig,
)
from tests.e2e.rbac import bind_namespaced, operator_identity
from tests.e2e.support import until as happens

pytestmark = pytest.mark.usefixtures("kokpit_crds")


def package(
    name: str,
    release: Release,
    *,
    apiserver_flags: dict[str, str] | None = None,
    deadline: int = 60,
) -> dict[str, Any]:
    return cluster_package(
        name, release, apiserver_flags=apiserver_flags, deadline_seconds=deadline
    )


class Operator:
    """The Cluster-Operator in this process, which a test can kill and start again: leader
    elected on its Lease, like a deployed one, with the runtimes a test enables (the
    ``process`` runtime is opt-in, as in ``kokpit operator cluster``)."""

    def __init__(
        self,
        config: ClientConfig,
        root: Path,
        runtimes: tuple[str, ...] = ("process", "kubernetes"),
        options: ClusterOptions | None = None,
    ) -> None:
        self.config, self.root, self.enabled = config, root, runtimes
        self.options = options or ClusterOptions(poll_interval=0.5)
        self.task: asyncio.Task[None] | None = None
        self.client: Client | None = None

    async def start(self) -> None:
        self.client = Client(self.config)
        election = LeaderElectionConfig("kokpit-system", "kokpit-cluster-operator", "e2e")
        manager = Manager(self.client, ManagerOptions(leader_election=election, health_port=None))
        recorder = EventRecorder(
            self.client, "kokpit.io/cluster-operator", "test", min_update_interval=0
        )
        available: dict[str, ControlPlaneRuntime] = {
            "process": ProcessRuntime(self.root),
            "kubernetes": KubernetesRuntime(self.client),
        }
        runtimes = {name: available[name] for name in self.enabled}
        setup(manager, runtimes, recorder, self.options)
        self.task = asyncio.create_task(manager.start())

    async def stop(self) -> None:
        assert self.task is not None
        assert self.client is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.client.close()


#: In the operator's environment, never in its components'.
MARKER = "KOKPIT_TEST_SECRET"


@pytest.fixture
def identity(local_cluster: LocalCluster, kubectl: Kubectl, namespace: str) -> ClientConfig:
    """The operator's service account, with exactly the permissions of
    config/rbac/cluster-operator.yaml (its namespaced role bound in the test's namespace)."""
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    return operator_identity(kubectl, admin, "cluster-operator", [namespace])


@pytest.fixture
async def operator(
    identity: ClientConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Operator]:
    monkeypatch.setenv(MARKER, "xyz")  # like a token or cloud credentials of the operator
    op = Operator(identity, tmp_path / "cp")
    await op.start()
    yield op
    await op.stop()
    # Whatever a failed test left running: stop it, so no control plane outlives the test.
    stop_control_planes(op.root)


def process_root(tmp_path: Path) -> Path:
    """Where a test's control planes run (one directory per Cluster uid)."""
    return tmp_path / "cp"


@pytest.fixture
async def cluster_operator(
    identity: ClientConfig, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    """The Cluster-Operator as a process of its own (``kokpit operator cluster``, process
    runtime) with the permissions of config/rbac/cluster-operator.yaml, for tests that
    SIGKILL it."""
    root = process_root(tmp_path)
    args = ["--runtimes", "process", "--process-root", str(root)]
    kubeconfig = write_kubeconfig(identity, tmp_path / "cluster-operator.kubeconfig")
    try:
        with operator_process("cluster", kubeconfig, tmp_path / "cluster-operator.log", args) as op:
            await op.start()
            yield op
    finally:
        stop_control_planes(root)  # whatever a failed test left running


async def until(
    client: Client,
    namespace: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    seconds: float = 180,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    obj: dict[str, Any] = {}
    while loop.time() < deadline:
        with contextlib.suppress(NotFound):
            obj = await client.get(CLUSTERS, name, namespace=namespace)
            if check(obj):
                return obj
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out; status: {json.dumps(obj.get('status'), indent=1)}")


async def deleted(client: Client, namespace: str, name: str) -> None:
    """Delete a Cluster and wait until its finalizer has run and it is gone."""
    await client.delete(CLUSTERS, name, namespace=namespace)
    for _ in range(120):
        try:
            await client.get(CLUSTERS, name, namespace=namespace)
        except NotFound:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"Cluster {name} was not deleted")


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            found: dict[str, Any] = c
            return found
    return {}


def cluster_where(
    client: Client, namespace: str, check: Callable[[dict[str, Any]], bool], name: str = "biz"
) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    """A check for :meth:`OperatorProcess.wait`: the Cluster once ``check`` holds for it."""

    async def where() -> dict[str, Any] | None:
        with contextlib.suppress(NotFound):
            obj = await client.get(CLUSTERS, name, namespace=namespace)
            return obj if check(obj) else None
        return None

    return where


def running(version: str) -> Callable[[dict[str, Any]], bool]:
    def check(obj: dict[str, Any]) -> bool:
        s = obj.get("status", {})
        return bool(
            s.get("kubernetesVersion") == version and cond(obj, "Ready").get("status") == "True"
        )

    return check


async def business_kubectl(
    client: Client, kubectl: Kubectl, namespace: str, name: str, tmp_path: Path
) -> Kubectl:
    secret = await client.get(SECRETS, f"{name}-admin-kubeconfig", namespace=namespace)
    path = tmp_path / f"{name}.kubeconfig"
    path.write_bytes(base64.b64decode(secret["data"]["value"]))
    return Kubectl(kubectl.binary, path)


def environment_keys(pid: int) -> list[str]:
    """The names of the variables in the environment process ``pid`` was started with."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return sorted(item.split(b"=", 1)[0].decode() for item in environ if item)


def version_of(k: Kubectl) -> str:
    return str(json.loads(k.run("get", "--raw", "/version"))["gitVersion"])


@pytest.mark.slow  # about 70 s
async def test_create_fail_roll_back_upgrade_and_delete(
    client: Client, kubectl: Kubectl, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    tag = secrets.token_hex(3)
    old, new, broken = f"old-{tag}", f"new-{tag}", f"broken-{tag}"
    await client.create(PACKAGE_VERSIONS, package(old, Release("v1.35.4")))
    await client.create(PACKAGE_VERSIONS, package(new, Release("v1.36.3")))
    await client.create(
        PACKAGE_VERSIONS,
        package(broken, Release("v1.36.3"), apiserver_flags={"no-such-flag": "x"}, deadline=15),
    )
    await client.create(
        CLUSTERS,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "biz", "namespace": namespace},
            "spec": {"packageVersion": old, "runtime": "process"},
        },
    )

    # Create: a real business API server, reachable with the admin kubeconfig Secret.
    obj = await until(client, namespace, "biz", running("v1.35.4"))
    assert obj["status"]["phase"] == "Running"
    # Its components run with a minimal environment, not the operator's.
    state = Supervisor(Layout(operator.root / obj["metadata"]["uid"])).state()
    for name, entry in state["processes"].items():
        keys = environment_keys(entry["pid"])
        assert MARKER not in keys, f"{name} inherited the operator's environment"
        assert keys == ["HOME", "PATH"], f"{name} got {keys}"
    biz = await business_kubectl(client, kubectl, namespace, "biz", tmp_path)
    assert version_of(biz) == "v1.35.4"
    biz.run("create", "configmap", "keep", "--from-literal=answer=42")

    # A broken kube-apiserver flag: its health check fails, and the cluster rolls back.
    await client.patch(CLUSTERS, "biz", {"spec": {"packageVersion": broken}}, namespace=namespace)
    obj = await until(
        client,
        namespace,
        "biz",
        lambda o: cond(o, "RolledBack").get("status") == "True" and running("v1.35.4")(o),
    )
    assert obj["status"]["failedPackageVersion"] == broken
    assert broken in cond(obj, "RolledBack")["message"]
    assert version_of(biz) == "v1.35.4"
    assert biz.get("configmap", "keep")["data"] == {"answer": "42"}
    await asyncio.sleep(3)
    still = await client.get(CLUSTERS, "biz", namespace=namespace)
    assert still["status"].get("step") is None, "the failed version is not retried"

    # Upgrade.
    await client.patch(CLUSTERS, "biz", {"spec": {"packageVersion": new}}, namespace=namespace)
    obj = await until(client, namespace, "biz", running("v1.36.3"))
    assert cond(obj, "RolledBack")["status"] == "False"
    assert version_of(biz) == "v1.36.3"
    assert biz.get("configmap", "keep")["data"] == {"answer": "42"}
    assert [h["packageVersion"] for h in obj["status"]["history"]] == [old, new]
    events = (await client.list(EVENTS, namespace=namespace)).items
    steps = [e["note"] for e in events if e["reason"] == "StepStarted" and new in e["note"]]
    assert sorted(steps) == sorted(set(steps)), f"no step of the upgrade started twice: {steps}"
    assert any("kube-scheduler" in s for s in steps), "and none was skipped"

    # Delete: processes stopped, Secrets gone.
    uid = obj["metadata"]["uid"]
    await deleted(client, namespace, "biz")
    assert not (operator.root / uid).exists()
    for suffix in ("pki", "admin-kubeconfig"):
        with pytest.raises(NotFound):
            await client.get(SECRETS, f"biz-{suffix}", namespace=namespace)
    for name in (old, new, broken):
        await client.delete(PACKAGE_VERSIONS, name)


@dataclass
class ComponentRun:
    """One process of a control-plane component, as :class:`ComponentWatch` saw it."""

    component: str
    pid: int
    #: The binary it runs (the release directory names its version).
    binary: str
    #: Wall-clock times of the first and the last scan that saw it alive.
    first_seen: float
    last_seen: float


class ComponentWatch:
    """Every component process of the control planes under ``root``, seen by scanning /proc
    every ``interval`` seconds from a thread: which ran, from which binary, and when.

    Two processes of one component seen alive by the same scan ran concurrently; a process
    shorter than ``interval`` may be missed (a component takes seconds to start)."""

    def __init__(self, root: Path, interval: float = 0.05) -> None:
        self.root = str(root)
        self.interval = interval
        self._runs: dict[tuple[int, str], ComponentRun] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="component-watch", daemon=True)

    def __enter__(self) -> ComponentWatch:
        self._scan()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def runs(self, component: str | None = None) -> list[ComponentRun]:
        with self._lock:
            found = sorted(self._runs.values(), key=lambda r: r.first_seen)
        return [r for r in found if component in (None, r.component)]

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._scan()

    def _scan(self) -> None:
        now = time.time()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
                state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            binary = argv[0].decode(errors="replace")
            component = Path(binary).name
            if component not in ORDER or state in ("Z", "X"):
                continue
            if not any(self.root.encode() in arg for arg in argv[1:]):
                continue
            key = (int(entry.name), binary)
            with self._lock:
                run = self._runs.setdefault(key, ComponentRun(component, key[0], binary, now, now))
                run.last_seen = now


def concurrent(runs: list[ComponentRun]) -> list[tuple[ComponentRun, ComponentRun]]:
    """Pairs of processes of one component that were alive at the same time."""
    by_interval = {(r.first_seen, r.last_seen): r for r in runs}
    return [(by_interval[a], by_interval[b]) for a, b in overlapping(list(by_interval))]


def running_version(pid: int) -> str:
    """What the binary of a running process says its version is."""
    said = subprocess.run(
        [f"/proc/{pid}/exe", "--version"], capture_output=True, text=True, check=True
    )
    return said.stdout.strip()


def release_of(run: ComponentRun) -> str:
    """The Kubernetes release whose binaries a process runs (the cache is per release)."""
    return Path(run.binary).parent.name


async def upgradable_cluster(
    client: Client, namespace: str, op: OperatorProcess, name: str = "biz"
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Package versions of v1.35.4 and v1.36.3 (named for this test), and a ``process``
    Cluster ``name`` Running the first: (old, new, the Cluster)."""
    tag = secrets.token_hex(3)
    old, new = package(f"old-{tag}", Release("v1.35.4")), package(f"new-{tag}", Release("v1.36.3"))
    for pv in (old, new):
        await client.create(PACKAGE_VERSIONS, pv)
    await client.create(
        CLUSTERS,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"packageVersion": old["metadata"]["name"], "runtime": "process"},
        },
    )
    obj = await op.wait(cluster_where(client, namespace, running("v1.35.4"), name), "v1.35.4", 180)
    return old, new, obj


async def test_an_upgrade_step_waits_for_the_guard_and_goes_on_once_allowed(
    client: Client, namespace: str, cluster_operator: OperatorProcess
) -> None:
    """A RiskPolicy of one upgrade step per ten minutes: the operator (its own process, its
    shipped RBAC) takes one step, is refused the next and says so; once the policy is gone the
    upgrade finishes. Creating the cluster asked nothing."""
    op = cluster_operator
    _, new, _ = await upgradable_cluster(client, namespace, op, "guarded")
    tag = secrets.token_hex(3)  # the policy's name
    with pytest.raises(NotFound):
        await client.get(RISK_LEDGERS, f"steps-{tag}")
    policy = {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "RiskPolicy",
        "metadata": {"name": f"steps-{tag}"},
        "spec": {
            "actions": ["ControlPlaneUpgradeStep"],
            "rateLimit": {"count": 1, "windowSeconds": 600},
        },
    }
    await client.create(RISK_POLICIES, policy)
    try:
        await asyncio.sleep(1)  # the operator's informer sees the policy
        await client.patch(
            CLUSTERS,
            "guarded",
            {"spec": {"packageVersion": new["metadata"]["name"]}},
            namespace=namespace,
        )

        def denied(o: dict[str, Any]) -> bool:
            return cond(o, "Upgrading").get("reason") == "GuardDenied"

        obj = await op.wait(
            cluster_where(client, namespace, denied, "guarded"), "a step denied", 120
        )
        message = cond(obj, "Upgrading")["message"]
        assert f"RiskPolicy steps-{tag}: rate limit: 1 of 1 grants in the last 600s" in message
        ledger = await client.get(RISK_LEDGERS, f"steps-{tag}")
        (scope,) = ledger["status"]["scopes"]
        assert len(scope["grants"]) == 1
        decisions = ledger["status"]["decisions"]
        assert decisions[0]["allowed"]
        assert decisions[0]["requester"].startswith("kokpit.io/cluster-operator")
        assert any(not d["allowed"] for d in decisions)
        await asyncio.sleep(3)
        still = await client.get(CLUSTERS, "guarded", namespace=namespace)
        assert still["status"]["phase"] == "Upgrading", "it waits"
    finally:
        await client.delete(RISK_POLICIES, f"steps-{tag}")
    await op.wait(cluster_where(client, namespace, running("v1.36.3"), "guarded"), "v1.36.3", 180)


async def test_the_operator_sigkilled_mid_upgrade_step_finishes_the_upgrade_once_restarted(
    client: Client,
    kubectl: Kubectl,
    namespace: str,
    cluster_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    op = cluster_operator
    old, new, obj = await upgradable_cluster(client, namespace, op)
    biz = await business_kubectl(client, kubectl, namespace, "biz", tmp_path)
    biz.run("create", "configmap", "keep", "--from-literal=answer=42")
    etcd_changes = old["spec"]["components"]["etcd"] != new["spec"]["components"]["etcd"]

    with ComponentWatch(process_root(tmp_path) / obj["metadata"]["uid"]) as watch:
        before = {(r.pid, r.binary) for r in watch.runs()}
        assert {r.component for r in watch.runs()} == set(ORDER)
        await client.patch(
            CLUSTERS,
            "biz",
            {"spec": {"packageVersion": new["metadata"]["name"]}},
            namespace=namespace,
        )

        async def apiserver_step_under_way() -> dict[str, Any] | None:
            o = await client.get(CLUSTERS, "biz", namespace=namespace)
            step = o["status"].get("step") or {}
            new_apiserver = [r for r in watch.runs("kube-apiserver") if release_of(r) == "v1.36.3"]
            return o if step.get("component") == "kube-apiserver" and new_apiserver else None

        # The risky moment: the step is recorded and the new kube-apiserver is starting.
        await op.wait(apiserver_step_under_way, "the kube-apiserver step to be under way", 120)
        op.kill()
        obj = await client.get(CLUSTERS, "biz", namespace=namespace)
        step = obj["status"].get("step") or {}
        assert (step.get("component"), step.get("version"), step.get("packageVersion")) == (
            "kube-apiserver",
            "v1.36.3",
            new["metadata"]["name"],
        ), op.explain(f"the intent is not in the API server: {step}")
        started = next(r for r in watch.runs("kube-apiserver") if release_of(r) == "v1.36.3")
        assert started.first_seen >= api_seconds(step["startedAt"]), "recorded before the step"

        await op.start()
        obj = await op.wait(cluster_where(client, namespace, running("v1.36.3")), "v1.36.3", 180)
    for component in ORDER:
        clashes = concurrent(watch.runs(component))
        assert not clashes, op.explain(f"{component} ran concurrently with itself: {clashes}")
    started_by = {c: [r for r in watch.runs(c) if (r.pid, r.binary) not in before] for c in ORDER}
    assert len(started_by["etcd"]) == (1 if etcd_changes else 0), started_by["etcd"]
    assert 1 <= len(started_by["kube-apiserver"]) <= 2, started_by["kube-apiserver"]
    assert len(started_by["kube-controller-manager"]) == 1, "not skipped, not repeated"
    assert len(started_by["kube-scheduler"]) == 1, "not skipped, not repeated"
    # Each component ends at the new version, as the running process itself says.
    assert version_of(biz) == "v1.36.3"  # kube-apiserver's /version
    for component in ("kube-controller-manager", "kube-scheduler"):
        (process,) = started_by[component]
        assert running_version(process.pid) == "Kubernetes v1.36.3", component
    etcd = max(watch.runs("etcd"), key=lambda r: r.last_seen)  # the one running now
    etcd_version = str(new["spec"]["components"]["etcd"]["version"]).removeprefix("v")
    assert running_version(etcd.pid).splitlines()[0] == f"etcd Version: {etcd_version}"
    assert biz.get("configmap", "keep")["data"] == {"answer": "42"}
    assert [h["packageVersion"] for h in obj["status"]["history"]] == [
        old["metadata"]["name"],
        new["metadata"]["name"],
    ]
    await deleted(client, namespace, "biz")
    for pv in (old, new):
        await client.delete(PACKAGE_VERSIONS, pv["metadata"]["name"])


async def test_a_missing_package_version_and_a_skipped_minor_are_conditions_not_crashes(
    client: Client, namespace: str, operator: Operator
) -> None:
    tag = secrets.token_hex(3)
    await client.create(
        CLUSTERS,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "waiting", "namespace": namespace},
            "spec": {"packageVersion": f"later-{tag}", "runtime": "process"},
        },
    )
    obj = await until(
        client,
        namespace,
        "waiting",
        lambda o: cond(o, "PackageVersionResolved").get("reason") == "NotFound",
    )
    assert obj["status"]["phase"] == "Pending"
    assert f"later-{tag}" in cond(obj, "PackageVersionResolved")["message"]

    await client.create(PACKAGE_VERSIONS, package(f"later-{tag}", Release("v1.35.4")))
    await until(client, namespace, "waiting", running("v1.35.4"))  # the new package requeued it

    skip = package(f"skip-{tag}", Release("v1.36.3"))
    skip["spec"]["kubernetesVersion"] = "v1.37.2"
    await client.create(PACKAGE_VERSIONS, skip)
    await client.patch(
        CLUSTERS, "waiting", {"spec": {"packageVersion": f"skip-{tag}"}}, namespace=namespace
    )
    obj = await until(
        client,
        namespace,
        "waiting",
        lambda o: cond(o, "Upgrading").get("reason") == "VersionSkewNotAllowed",
    )
    assert "allowVersionSkip" in cond(obj, "Upgrading")["message"]
    assert obj["status"]["kubernetesVersion"] == "v1.35.4", "nothing was touched"
    await deleted(client, namespace, "waiting")
    assert not list(operator.root.glob("*")), "its control plane is gone"
    for name in (f"later-{tag}", f"skip-{tag}"):
        await client.delete(PACKAGE_VERSIONS, name)


async def test_nodes_of_a_business_cluster_get_their_pod_cidrs_from_its_pod_cidr(
    client: Client, kubectl: Kubectl, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    name = f"ipam-{secrets.token_hex(3)}"
    await client.create(PACKAGE_VERSIONS, package(name, Release("v1.36.3")))
    network = {"serviceCIDR": "10.100.0.0/16", "podCIDR": "10.123.0.0/16"}
    await client.create(
        CLUSTERS,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "ipam", "namespace": namespace},
            "spec": {"packageVersion": name, "runtime": "process", "network": network},
        },
    )
    await until(client, namespace, "ipam", running("v1.36.3"))
    biz = await business_kubectl(client, kubectl, namespace, "ipam", tmp_path)
    nodes = ["n1", "n2"]
    biz.apply([{"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}} for n in nodes])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    cidrs: dict[str, str] = {}
    while loop.time() < deadline and len(cidrs) < len(nodes):
        for n in nodes:
            if cidr := biz.get("node", n)["spec"].get("podCIDR"):
                cidrs[n] = cidr
        await asyncio.sleep(0.5)
    assert len(cidrs) == len(nodes), f"kube-controller-manager gave no podCIDR: {cidrs}"
    ranges = [ipaddress.IPv4Network(c) for c in cidrs.values()]
    assert all(r.subnet_of(ipaddress.IPv4Network("10.123.0.0/16")) for r in ranges), cidrs
    assert all(r.prefixlen == 24 for r in ranges), "a /24 per node"
    assert len(set(ranges)) == len(nodes), "each node its own"
    await deleted(client, namespace, "ipam")
    await client.delete(PACKAGE_VERSIONS, name)


@pytest.mark.usefixtures("shared_nodes")
async def test_a_kube_on_kube_cluster_with_the_longest_allowed_name_becomes_ready(
    client: Client, kubectl: Kubectl, namespace: str, operator: Operator
) -> None:
    """The limit on a Cluster's name is not too loose: at the limit, every object named after
    it is valid (the etcd StatefulSet's pods, the tightest, are created and run)."""
    package_name = f"p-{secrets.token_hex(3)}"
    await client.create(PACKAGE_VERSIONS, package(package_name, Release("v1.36.3")))
    name = "k" * NAME_MAX
    await client.create(
        CLUSTERS,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"packageVersion": package_name, "runtime": "kubernetes"},
        },
    )
    await until(client, namespace, name, lambda o: cond(o, "Ready").get("status") == "True")
    pods = kubectl.get("pods", "-n", namespace, "-l", f"kokpit.io/cluster={name}")["items"]
    assert f"{name}-etcd-0" in [p["metadata"]["name"] for p in pods]
    await deleted(client, namespace, name)
    await client.delete(PACKAGE_VERSIONS, package_name)


@pytest.mark.slow  # about 60 s
@pytest.mark.usefixtures("shared_nodes")
async def test_fifty_kube_on_kube_clusters_become_ready_on_kwok_nodes(
    client: Client, kubectl: Kubectl, namespace: str, operator: Operator
) -> None:
    name = f"p-{secrets.token_hex(3)}"
    await client.create(PACKAGE_VERSIONS, package(name, Release("v1.36.3")))
    for i in range(50):
        await client.create(
            CLUSTERS,
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": f"k{i:02d}", "namespace": namespace},
                "spec": {
                    "packageVersion": name,
                    "runtime": "kubernetes",
                    "controlPlane": {"etcdReplicas": 3, "replicas": 2},
                },
            },
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 300
    ready: list[str] = []
    while loop.time() < deadline:
        items = (await client.list(CLUSTERS, namespace=namespace)).items
        ready = [c["metadata"]["name"] for c in items if cond(c, "Ready").get("status") == "True"]
        if len(ready) == 50:
            break
        await asyncio.sleep(1)
    assert len(ready) == 50, f"{len(ready)}/50 Ready"
    pods = kubectl.get("pods", "-n", namespace, "-l", "kokpit.io/cluster=k07")["items"]
    components = sorted(p["metadata"]["labels"]["kokpit.io/component"] for p in pods)
    assert (
        components
        == ["etcd"] * 3
        + ["kube-apiserver"] * 2
        + ["kube-controller-manager"] * 2
        + ["kube-scheduler"] * 2
    )
    assert all(p["spec"].get("nodeName") for p in pods), "placed by the real scheduler"
    endpoint = (await client.get(CLUSTERS, "k07", namespace=namespace))["status"]["endpoint"]
    assert endpoint == f"https://k07-kube-apiserver.{namespace}.svc:6443"

    await deleted(client, namespace, "k07")
    left = kubectl.get(
        "deployments,statefulsets,services,secrets", "-n", namespace, "-l", "kokpit.io/cluster=k07"
    )["items"]
    assert left == [], "deleting a Cluster leaves no orphans"
    await client.delete(PACKAGE_VERSIONS, name)


async def test_a_secret_of_the_clusters_name_that_it_does_not_own_is_never_used_or_deleted(
    client: Client, namespace: str, operator: Operator
) -> None:
    tag = secrets.token_hex(3)
    await client.create(PACKAGE_VERSIONS, package(f"owned-{tag}", Release("v1.35.4")))
    theirs = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "squatted-pki", "namespace": namespace},
        "stringData": {"ca.key": "not kokpit's"},
    }
    await client.create(SECRETS, theirs)
    await client.create(
        CLUSTERS,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "squatted", "namespace": namespace},
            "spec": {"packageVersion": f"owned-{tag}", "runtime": "process"},
        },
    )
    obj = await until(
        client,
        namespace,
        "squatted",
        lambda o: cond(o, "Upgrading").get("reason") == "SecretNotOwned",
    )
    assert (
        "squatted-pki exists and is not owned by this Cluster" in cond(obj, "Upgrading")["message"]
    )
    assert not list(operator.root.glob("*")), "no control plane was started"
    await deleted(client, namespace, "squatted")
    secret = await client.get(SECRETS, "squatted-pki", namespace=namespace)
    assert base64.b64decode(secret["data"]["ca.key"]) == b"not kokpit's"
    await client.delete(PACKAGE_VERSIONS, f"owned-{tag}")


@pytest.mark.usefixtures("shared_nodes")
async def test_a_workload_of_the_clusters_name_that_it_does_not_own_is_never_overwritten(
    client: Client, namespace: str, operator: Operator
) -> None:
    """The kubernetes runtime applies its etcd Service by name: one that exists and is not the
    Cluster's stops the step with a condition, and survives the Cluster's deletion."""
    tag = secrets.token_hex(3)
    await client.create(PACKAGE_VERSIONS, package(f"squat-{tag}", Release("v1.35.4")))
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "squat-etcd", "namespace": namespace, "labels": {"mine": "yes"}},
        "spec": {"ports": [{"port": 80}]},
    }
    await client.create(SERVICES, theirs)
    await client.create(
        CLUSTERS,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "squat", "namespace": namespace},
            "spec": {"packageVersion": f"squat-{tag}", "runtime": "kubernetes"},
        },
    )
    obj = await until(
        client, namespace, "squat", lambda o: cond(o, "Upgrading").get("reason") == "CannotApply"
    )
    assert "Service squat-etcd exists and is not owned" in cond(obj, "Upgrading")["message"]
    await deleted(client, namespace, "squat")
    service = await client.get(SERVICES, "squat-etcd", namespace=namespace)
    assert service["metadata"]["labels"] == {"mine": "yes"}
    assert [p["port"] for p in service["spec"]["ports"]] == [80]
    await client.delete(PACKAGE_VERSIONS, f"squat-{tag}")


def serving_serial(endpoint: str) -> int:
    """The serial number of the certificate the business API server serves now."""
    url = urllib.parse.urlsplit(endpoint)
    pem = ssl.get_server_certificate((url.hostname or "", url.port or 443))
    return int(x509.load_pem_x509_certificate(pem.encode()).serial_number)


@pytest.mark.slow
async def test_certificates_are_renewed_before_they_expire_and_rolled_out(
    client: Client, kubectl: Kubectl, namespace: str, local_cluster: LocalCluster, tmp_path: Path
) -> None:
    """Leaves that last 90 s are renewed 60 s in (a third left) and each component is moved to
    them one at a time; the cluster keeps serving, with its data, on the new certificates."""
    options = ClusterOptions(poll_interval=0.5, leaf_validity_seconds=90)
    operator = Operator(
        ClientConfig.from_kubeconfig(local_cluster.kubeconfig), tmp_path / "cp", options=options
    )
    await operator.start()
    tag = secrets.token_hex(3)
    try:
        await client.create(PACKAGE_VERSIONS, package(f"rot-{tag}", Release("v1.35.4")))
        await client.create(
            CLUSTERS,
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": "rot", "namespace": namespace},
                "spec": {"packageVersion": f"rot-{tag}", "runtime": "process"},
            },
        )
        obj = await until(client, namespace, "rot", running("v1.35.4"))
        endpoint = obj["status"]["endpoint"]
        first = serving_serial(endpoint)
        biz = await business_kubectl(client, kubectl, namespace, "rot", tmp_path)
        biz.run("create", "configmap", "keep", "--from-literal=answer=42")

        def renewed(o: dict[str, Any]) -> bool:
            return running("v1.35.4")(o) and serving_serial(endpoint) != first

        await until(client, namespace, "rot", renewed, seconds=150)
        pki = await client.get(SECRETS, "rot-pki", namespace=namespace)
        assert int(pki["metadata"]["annotations"]["kokpit.io/credentials-generation"]) >= 1
        events = (await client.list(EVENTS, namespace=namespace)).items
        assert any(e["reason"] == "CertificatesRenewed" for e in events)
        biz = await business_kubectl(client, kubectl, namespace, "rot", tmp_path)  # new admin
        assert biz.get("configmap", "keep")["data"] == {"answer": "42"}
        await deleted(client, namespace, "rot")
        await client.delete(PACKAGE_VERSIONS, f"rot-{tag}")
    finally:
        await operator.stop()
        stop_control_planes(operator.root)


async def test_the_operators_identity_is_forbidden_what_it_does_not_need(
    identity: ClientConfig, namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "planted", "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": {"app": "planted"}},
            "template": {
                "metadata": {"labels": {"app": "planted"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    async with Client(identity) as op:
        # What it needs works (so the refusals below are RBAC's, not a broken token)...
        with pytest.raises(NotFound):
            await op.get(SECRETS, "no-such-secret", namespace=namespace)
        await op.list(CLUSTERS)
        # ...and what it does not need is refused.
        with pytest.raises(Forbidden):  # Secrets only by name, only where Clusters are
            await op.list(SECRETS)
        with pytest.raises(Forbidden):
            await op.get(SECRETS, "any", namespace="kube-system")
        with pytest.raises(Forbidden):  # workloads only where Clusters are
            await op.create(DEPLOYMENTS, deployment)
        with pytest.raises(Forbidden):  # Machines are the Machine-Operator's
            await op.list(MACHINES, namespace=namespace)
        with pytest.raises(Forbidden):  # its own Lease only
            await op.get(LEASES, "kokpit-machine-operator", namespace="kokpit-system")


async def test_a_cluster_asking_for_a_disabled_runtime_is_told_which_flag_enables_it(
    client: Client, identity: ClientConfig, namespace: str, tmp_path: Path
) -> None:
    # What `kokpit operator cluster` runs unless told otherwise: no process runtime.
    op = Operator(identity, tmp_path / "cp", runtimes=("kubernetes",))
    await op.start()
    try:
        await client.create(
            CLUSTERS,
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": "local", "namespace": namespace},
                "spec": {"packageVersion": "any", "runtime": "process"},
            },
        )
        obj = await until(
            client,
            namespace,
            "local",
            lambda o: cond(o, "ControlPlaneAvailable").get("reason") == "RuntimeNotEnabled",
            seconds=60,
        )
        message = cond(obj, "ControlPlaneAvailable")["message"]
        assert "process runtime is not enabled" in message
        assert "--runtimes" in message
        assert cond(obj, "Upgrading")["reason"] == "RuntimeNotEnabled"
        assert cond(obj, "Ready")["status"] == "False"
        assert not op.root.exists() or not list(op.root.iterdir()), "nothing was started"
        with pytest.raises(NotFound):  # nor made for it
            await client.get(SECRETS, "local-pki", namespace=namespace)

        async def refused() -> bool:
            """The Event (recorded after the status the test waited for)."""
            events = (await client.list(EVENTS, namespace=namespace)).items
            return any(e["reason"] == "RuntimeNotEnabled" for e in events)

        await happens("a RuntimeNotEnabled Event", refused, 10)
        # Nothing was ever applied: it can be deleted without the runtime.
        await deleted(client, namespace, "local")
    finally:
        await op.stop()


async def test_a_namespace_the_operator_is_not_bound_in_is_a_condition_naming_the_role(
    client: Client, kubectl: Kubectl, operator: Operator
) -> None:
    tag = secrets.token_hex(3)
    unbound = f"unbound-{tag}"
    kubectl.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": unbound}}])
    try:
        await client.create(PACKAGE_VERSIONS, package(f"p-{tag}", Release("v1.36.3")))
        await client.create(
            CLUSTERS,
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": "elsewhere", "namespace": unbound},
                "spec": {"packageVersion": f"p-{tag}", "runtime": "kubernetes"},
            },
        )
        obj = await until(
            client,
            unbound,
            "elsewhere",
            lambda o: cond(o, "ControlPlaneAvailable").get("reason") == "Forbidden",
            seconds=60,
        )
        message = cond(obj, "ControlPlaneAvailable")["message"]
        assert f"may not manage Secrets and workloads in namespace {unbound}" in message
        assert "kokpit-cluster-operator-namespaced" in message
        # The admin does what the message says, and the Cluster goes on.
        bind_namespaced(kubectl, "cluster-operator", unbound)
        await until(
            client,
            unbound,
            "elsewhere",
            lambda o: bool(o["status"].get("step") or o["status"].get("packageVersion")),
            seconds=60,
        )
        await client.get(SECRETS, "elsewhere-pki", namespace=unbound)
        # Deleting the namespace deletes the RoleBinding with everything else, maybe first
        # (as here): the Cluster must not be stuck on a finalizer its operator cannot run.
        kubectl.run("delete", "rolebinding", "kokpit-cluster-operator", "-n", unbound)
        kubectl.run("delete", "namespace", unbound, "--wait=false")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            try:
                await client.get(CLUSTERS, "elsewhere", namespace=unbound)
            except NotFound:
                break
            assert loop.time() < deadline, "the Cluster of a deleted namespace was never let go"
            await asyncio.sleep(0.5)
        await client.delete(PACKAGE_VERSIONS, f"p-{tag}")
    finally:
        kubectl.run("delete", "namespace", unbound, "--wait=false", "--ignore-not-found")
