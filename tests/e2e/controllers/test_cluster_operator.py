"""The Cluster-Operator with the process runtime: real business control planes, created,
upgraded, rolled back after a failed health check, resumed after the operator dies, deleted."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from kokpit.controllers.cluster import CLUSTERS, PACKAGE_VERSIONS, ClusterOptions, setup
from kokpit.controllers.machine import MACHINES
from kokpit.local import Kubectl, LocalCluster
from kokpit.local.components import Layout
from kokpit.local.samples import cluster_package
from kokpit.local.supervisor import Supervisor
from kokpit.local.versions import Release
from kokpit.providers.controlplane import ControlPlaneRuntime
from kokpit.providers.controlplane.kubernetes import KubernetesRuntime
from kokpit.providers.controlplane.process import ProcessRuntime
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
from kokpit.runtime.resources import DEPLOYMENTS, EVENTS, LEASES, SECRETS
from tests.e2e.rbac import bind_namespaced, operator_identity

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
    ) -> None:
        self.config, self.root, self.enabled = config, root, runtimes
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
        setup(manager, runtimes, recorder, ClusterOptions(poll_interval=0.5))
        self.task = asyncio.create_task(manager.start())

    async def kill(self) -> None:
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
    await op.kill()
    # Whatever a failed test left running: stop it, so no control plane outlives the test.
    for directory in op.root.glob("*"):
        Supervisor(Layout(directory)).stop_all()


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


async def test_create_fail_roll_back_upgrade_survive_restart_and_delete(
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
    biz = await business_kubectl(client, kubectl, namespace, "biz", tmp_path)
    assert version_of(biz) == "v1.35.4"
    biz.run("create", "configmap", "keep", "--from-literal=answer=42")
    # Its components run with a minimal environment, not the operator's.
    state = Supervisor(Layout(operator.root / obj["metadata"]["uid"])).state()
    for name, entry in state["processes"].items():
        keys = environment_keys(entry["pid"])
        assert MARKER not in keys, f"{name} inherited the operator's environment"
        assert keys == ["HOME", "PATH"], f"{name} got {keys}"

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

    # Upgrade, with the operator killed once a step is under way; the new one finishes it.
    await client.patch(CLUSTERS, "biz", {"spec": {"packageVersion": new}}, namespace=namespace)
    await until(
        client,
        namespace,
        "biz",
        lambda o: (o["status"].get("step") or {}).get("component") == "kube-apiserver",
    )
    await operator.kill()
    await operator.start()
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
        events = (await client.list(EVENTS, namespace=namespace)).items
        assert any(e["reason"] == "RuntimeNotEnabled" for e in events)
        # Nothing was ever applied: it can be deleted without the runtime.
        await deleted(client, namespace, "local")
    finally:
        await op.kill()


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
