"""kokpit installed like any operator, on the local meta-cluster's real node: its image
(``kokpit local image``, the ``kokpit_image`` fixture) imported into the node's containerd
(``kokpit local load``), and
``kubectl apply --server-side -k config/local`` (config/default and the local overlay). Every
operator runs as two pods from that image under exactly its manifests' ServiceAccount: the
pods hold no credential but that account's projected token, and reach the meta API server
through the ``kubernetes`` Service as any in-cluster client does.

What runs for real here: the operators' pods, their probes, leader election between replicas,
the Cluster-Operator's business control plane (etcd, kube-apiserver, controller-manager,
scheduler as pods on the same node, versions read from the components), the Machine-Operator
over SSH to real sshd hosts on this machine's address (their Nodes in the business cluster are
played by a KWOK of its own, as in the other Machine tests), and the Rollout-Operator.

Leadership: the leader's process is SIGKILLed (no clean-up runs: a follower waits out the
Lease), the leader's pod is deleted (SIGTERM: the Lease is released), and the node's containerd
is restarted; each time the Lease is never left unrenewed longer than its duration (and two
retry periods: see :func:`duration`), and only the leader reconciles (each replica's own
/metrics).

The rolling upgrade moves every Deployment to a second tag of the same image (there is one
kokpit build here), while a Cluster upgrade and a Machine rollout are in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.kube_on_kube import (
    HostedControlPlane,
    cond,
    expected,
    local_volumes,
    running,
)
from fixtures.samples import app_package
from kokpit.api.v1alpha1 import (
    CLUSTER_PACKAGE_VERSIONS,
    CLUSTERS,
    MACHINE_PACKAGE_VERSIONS,
    MACHINES,
    ROLLOUTS,
)
from kokpit.local import Assets, Kubectl, LocalCluster, kokpit_image, realnode
from kokpit.local.component_images import REPOSITORY
from kokpit.local.host import node_ip
from kokpit.local.nodes import start_kwok
from kokpit.local.versions import Release
from kokpit.providers.controlplane import ORDER
from kokpit.providers.controlplane.releases import cluster_package
from kokpit.providers.machine.sshd import SimulatedHost, start_host_at
from kokpit.runtime import Client, ClientConfig, LeaderElectionConfig
from kokpit.runtime.resources import EVENTS, SECRETS
from tests.e2e.rbac import bind_namespaced
from tests.e2e.support import condition, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

CONFIG = Path(__file__).parents[2] / "config"
SYSTEM = "kokpit-system"
OPERATORS = ("cluster", "machine", "remediation", "rollout", "probe")
#: The namespaced roles a person binds in a namespace of Clusters and Machines.
NAMESPACED = ("cluster-operator", "machine-operator", "remediation-operator", "rollout-operator")
OLD, NEW = Release("v1.35.4"), Release("v1.36.3")
#: The second tag of the image the rolling upgrade moves to.
NEXT_TAG = "next"
Object = dict[str, Any]


# -- the install ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(
    real_meta_cluster: LocalCluster, real_kubectl: Kubectl, kokpit_image: Path
) -> Iterator[Kubectl]:
    """kokpit from its image, as config/local installs it, every Deployment Available; then
    ``kokpit uninstall`` (the CRDs stay, as an uninstall leaves them)."""
    kubectl = real_kubectl
    data_dir = str(real_meta_cluster.layout.root)
    loaded = subprocess.run(
        [
            sys.executable,
            "-m",
            "kokpit",
            "local",
            "--data-dir",
            data_dir,
            "load",
            str(kokpit_image),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert realnode.node_name(0) in loaded.stdout
    kubectl.run("apply", "--server-side", "-k", str(CONFIG / "local"), timeout=120)
    try:
        wait_available(kubectl)
        yield kubectl
    finally:
        subprocess.run(
            [sys.executable, "-m", "kokpit", "uninstall", "--kubeconfig", str(kubectl.kubeconfig)],
            check=True,
            capture_output=True,
            timeout=300,
        )


def wait_available(kubectl: Kubectl) -> None:
    for operator in OPERATORS:
        kubectl.run(
            "rollout",
            "status",
            "-n",
            SYSTEM,
            f"deployment/kokpit-{operator}-operator",
            "--timeout=300s",
            timeout=320,
        )


def pods(kubectl: Kubectl, operator: str) -> list[Object]:
    selector = f"app.kubernetes.io/component={operator}-operator"
    items: list[Object] = kubectl.get("pods", "-n", SYSTEM, "-l", selector)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def lease(kubectl: Kubectl, operator: str) -> Object:
    spec: Object = kubectl.get("lease", "-n", SYSTEM, f"kokpit-{operator}-operator")["spec"]
    return spec


def lease_transitions(kubectl: Kubectl, operator: str) -> int:
    return int(lease(kubectl, operator).get("leaseTransitions") or 0)


def holder(kubectl: Kubectl, operator: str) -> str:
    return str(lease(kubectl, operator).get("holderIdentity") or "")


def leader_pod(kubectl: Kubectl, operator: str) -> str:
    """The pod whose replica holds the operator's Lease (identity ``<hostname>_<uuid>``)."""
    return holder(kubectl, operator).rsplit("_", 1)[0]


def reconciles(pod: Object) -> float:
    """Every reconcile this replica ran, from its own /metrics (on the pod's address)."""
    url = f"http://{pod['status']['podIP']}:8081/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(m.group(1))
        for m in re.finditer(r"^controller_runtime_reconcile_total\{[^}]*\} (\S+)$", text, re.M)
    )


async def first_reconcile(pod: Object) -> bool:
    return reconciles(pod) > 0


def container_pids(pod: Object) -> list[int]:
    """Host PIDs of the pod's containers' processes (found by the pod's cgroup), pause aside."""
    uid = pod["metadata"]["uid"]
    marks = (f"pod{uid}", f"pod{uid.replace('-', '_')}")
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            mine = any(m in (proc / "cgroup").read_text() for m in marks)
            if mine and (proc / "comm").read_text().strip() != "pause":
                found.append(int(proc.name))
    return found


class LeaseWatch:
    """Samples an operator's Lease while something disrupts it: the longest time it was left
    unrenewed (by anyone), and every holder seen."""

    def __init__(self, kubectl: Kubectl, operator: str) -> None:
        self.kubectl, self.operator = kubectl, operator
        self.holders: list[str] = []
        self.longest_gap = 0.0
        self._last_renewal = time.monotonic()
        self._last_seen: tuple[str, str] | None = None

    def sample(self) -> None:
        spec = lease(self.kubectl, self.operator)
        seen = (str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""))
        now = time.monotonic()
        if seen != self._last_seen:
            if self._last_seen is not None:
                self.longest_gap = max(self.longest_gap, now - self._last_renewal)
            self._last_renewal, self._last_seen = now, seen
            if not self.holders or self.holders[-1] != seen[0]:
                self.holders.append(seen[0])

    async def until(self, what: str, done: Any, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self.sample()
            if done(self):
                return
            await asyncio.sleep(0.25)
        raise AssertionError(f"{self.operator}: {what} not within {within} s: {self.holders}")


def duration(kubectl: Kubectl, operator: str) -> float:
    """The longest a Lease may go unrenewed across a handover: its duration, plus two retry
    periods with their jitter (a follower judges expiry from when it *saw* the last renewal, up
    to one retry period late, and tries again one retry period later: client-go's algorithm,
    which never compares clocks), plus a second for the API requests on two cores."""
    retry = LeaderElectionConfig("", "", "").retry_period * 1.2
    return float(lease(kubectl, operator)["leaseDurationSeconds"]) + 2 * retry + 1.0


# -- tests ----------------------------------------------------------------------------------


def test_every_operator_runs_from_the_image_as_its_service_account_and_one_replica_leads(
    installed: Kubectl,
) -> None:
    kubectl = installed
    image = kokpit_image.image_name(kokpit_image.installed_version())
    for operator in OPERATORS:
        replicas = pods(kubectl, operator)
        assert len(replicas) == 2, operator
        for pod in replicas:
            spec = pod["spec"]
            assert spec["serviceAccountName"] == f"kokpit-{operator}-operator"
            assert spec["nodeName"] == realnode.node_name(0)
            (container,) = spec["containers"]
            assert container["image"] == image
            assert (condition(pod, "Ready") or {}).get("status") == "True", pod["status"]
            # No credential but the account's own token: the projected service account
            # volume and a scratch directory, no Secret, no host path.
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert set(volumes) == {"tmp", *(n for n in volumes if n.startswith("kube-api-"))}
            assert "emptyDir" in volumes["tmp"]
        names = {p["metadata"]["name"] for p in replicas}
        assert leader_pod(kubectl, operator) in names, (operator, lease(kubectl, operator))


# -- the scenario ---------------------------------------------------------------------------


@pytest.fixture
async def client(real_meta_cluster: LocalCluster) -> AsyncIterator[Client]:
    async with Client(ClientConfig.from_kubeconfig(real_meta_cluster.kubeconfig)) as c:
        yield c


@pytest.fixture
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SimulatedHost]]:
    """Three sshd hosts on this machine's address (pods cannot reach its loopback ones)."""
    made: list[SimulatedHost] = []
    try:
        for i in range(3):
            made.append(start_host_at(tmp_path_factory.mktemp(f"in-cluster-host-{i}"), node_ip()))
        yield made
    finally:
        for host in made:
            host.stop()


def cluster(namespace: str, package: str) -> Object:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "biz", "namespace": namespace},
        "spec": {
            "packageVersion": package,
            "runtime": "kubernetes",
            "controlPlane": {"etcdReplicas": 1, "replicas": 1},
        },
    }


def machine(namespace: str, name: str, package: str, host: SimulatedHost) -> Object:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": name, "namespace": namespace, "labels": {"group": "app"}},
        "spec": {
            "clusterRef": {"name": "biz"},
            "packageVersion": package,
            "address": host.address,
            "port": host.port,
            "sshSecretRef": {"name": name},
        },
    }


async def the_cluster(client: Client, namespace: str, check: Any) -> Object | None:
    obj = await client.get(CLUSTERS, "biz", namespace=namespace)
    return obj if check(obj) else None


def installs(host: SimulatedHost) -> list[str]:
    """What the app package's install really did on ``host``, in order."""
    log = host.root / "opt" / "kokpit" / "steps.log"
    return log.read_text().splitlines() if log.exists() else []


async def test_a_cluster_upgrade_and_a_machine_rollout_finish_across_a_rolling_upgrade_of_kokpit(
    installed: Kubectl,
    client: Client,
    real_meta_cluster: LocalCluster,
    assets: Assets,
    hosts: list[SimulatedHost],
    tmp_path: Path,
) -> None:
    kubectl = installed
    namespace = f"in-cluster-{secrets.token_hex(3)}"
    kubectl.run("create", "namespace", namespace)
    for role in NAMESPACED:
        bind_namespaced(kubectl, role, namespace)
    # This test's hosts run no kubelet: the Machine-Operator registers their Nodes for KWOK
    # (as the other Machine tests do); a person's own change of the Deployment, rolled out.
    kubectl.run(
        "patch",
        "deployment",
        "-n",
        SYSTEM,
        "kokpit-machine-operator",
        "--type=json",
        "-p",
        json.dumps(
            [
                {
                    "op": "add",
                    "path": "/spec/template/spec/containers/0/args/-",
                    "value": "--kwok-nodes=ssh",
                }
            ]
        ),
    )
    wait_available(kubectl)
    volumes = local_volumes(kubectl, tmp_path / "volumes", 1)
    tag = secrets.token_hex(3)
    old, new = f"old-{tag}", f"new-{tag}"
    await client.create(CLUSTER_PACKAGE_VERSIONS, cluster_package(old, OLD, deadline_seconds=300))
    await client.create(CLUSTER_PACKAGE_VERSIONS, cluster_package(new, NEW, deadline_seconds=300))
    v1, v2 = f"app-1-{tag}", f"app-2-{tag}"
    await client.create(MACHINE_PACKAGE_VERSIONS, app_package(v1, "1"))
    await client.create(MACHINE_PACKAGE_VERSIONS, app_package(v2, "2"))
    kwok: subprocess.Popen[bytes] | None = None
    try:
        # 1. A business cluster, made by the Cluster-Operator in its pod.
        await client.create(CLUSTERS, cluster(namespace, old))
        await until(
            "the Cluster Running v1.35.4",
            lambda: the_cluster(client, namespace, lambda o: running(o, OLD.version)),
            600,
        )
        business = HostedControlPlane(kubectl, namespace, "biz", tmp_path)
        assert business.versions(etcd_members=1) == expected(OLD)
        biz = business.kubectl_via_service()
        kwok = start_kwok(assets, biz.kubeconfig, tmp_path)

        # 2. Three Machines over SSH, made Ready at app v1 by the Machine-Operator in its pod.
        names = [f"app-{i}" for i in range(len(hosts))]
        for name, host in zip(names, hosts, strict=True):
            await client.apply(SECRETS, host.ssh_secret(namespace, name), field_manager="test")
            await client.create(MACHINES, machine(namespace, name, v1, host))
        await until(
            "three Machines Ready at app v1",
            lambda: machines_where(client, namespace, v1, len(names)),
            300,
        )

        # 3. Both changes start: the Cluster to v1.36.3, and a rollout of app v2 (a canary,
        # a pause, then the rest).
        await client.patch(CLUSTERS, "biz", {"spec": {"packageVersion": new}}, namespace=namespace)
        await client.create(
            ROLLOUTS,
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "Rollout",
                "metadata": {"name": "app-v2", "namespace": namespace},
                "spec": {
                    "target": {
                        "kind": "Machine",
                        "selector": {"matchLabels": {"group": "app"}},
                        "packageVersion": v2,
                    },
                    "batches": [{"size": "1", "pauseSeconds": 30}, {"size": "100%"}],
                },
            },
        )
        await until(
            "the Cluster's upgrade and the rollout's canary under way",
            lambda: both_under_way(client, namespace, new),
            300,
        )

        # 4. kokpit's rolling upgrade: every Deployment to the image's second tag, one new
        # pod at a time (maxSurge 1, maxUnavailable 0), leadership passing on as pods go,
        # while neither change is finished.
        obj = await client.get(CLUSTERS, "biz", namespace=namespace)
        assert not running(obj, NEW.version), "the Cluster's upgrade finished too soon"
        assert await rollout_where(client, namespace, "Succeeded") is None
        transitions = {o: lease_transitions(kubectl, o) for o in ("cluster", "rollout", "machine")}
        upgrade_started = time.monotonic()
        retag(real_meta_cluster, NEXT_TAG)
        upgraded = f"{REPOSITORY}/kokpit:{NEXT_TAG}"
        for operator in OPERATORS:
            name = f"kokpit-{operator}-operator"
            kubectl.run("set", "image", "-n", SYSTEM, f"deployment/{name}", f"operator={upgraded}")
        wait_available(kubectl)
        rolled = time.monotonic() - upgrade_started
        for operator in OPERATORS:
            for pod in pods(kubectl, operator):
                assert pod["spec"]["containers"][0]["image"] == upgraded
        for operator, before in transitions.items():
            # The old pods may still be stopping when the rollout is complete.
            await settled_leader(kubectl, operator)
            assert lease_transitions(kubectl, operator) > before, f"{operator} kept its leader"

        # 5. Both finish, each step once.
        obj = await until(
            "the Cluster Running v1.36.3",
            lambda: the_cluster(client, namespace, lambda o: running(o, NEW.version)),
            900,
        )
        assert cond(obj, "RolledBack").get("status") != "True", obj["status"]
        assert business.versions(etcd_members=1) == expected(NEW)
        events = (await client.list(EVENTS, namespace=namespace)).items
        steps = sorted(
            (e["eventTime"] or e["metadata"]["creationTimestamp"], e["note"])
            for e in events
            if e["reason"] == "StepStarted" and f"({new})" in e["note"]
        )
        started = [note.split(" ")[0] for _, note in steps]
        # Each step announced once, in order. Events are informative, written in the
        # background, never the state an operator resumes from: a leader stopped by the
        # rolling upgrade just after storing a step's intent may take that step's Event with
        # it (its successor goes on with the stored step and does not announce it again). At
        # most one such step per leader change; every component's version is checked above.
        assert started == [c for c in ORDER if c in started], steps
        changes = lease_transitions(kubectl, "cluster") - transitions["cluster"]
        assert len(ORDER) - len(started) <= changes, (steps, changes)
        rollout = await until(
            "the rollout Succeeded",
            lambda: rollout_where(client, namespace, "Succeeded"),
            600,
        )
        sizes = [b.get("changed") for b in rollout["status"]["batches"]]
        assert sizes == [1, 2], rollout["status"]
        await until(
            "three Machines Ready at app v2",
            lambda: machines_where(client, namespace, v2, len(names)),
            120,
        )
        for host in hosts:
            assert installs(host) == ["app install 1", "app install 2"], host.root
        print(
            f"rolling upgrade of kokpit took {rolled:.0f} s; the Cluster's upgrade and the "
            f"rollout finished {time.monotonic() - upgrade_started:.0f} s after it began"
        )
    finally:
        if kwok is not None:
            kwok.terminate()
            kwok.wait(10)
        with contextlib.suppress(Exception):
            await client.delete(ROLLOUTS, "app-v2", namespace=namespace)
        for name in [f"app-{i}" for i in range(len(hosts))]:
            with contextlib.suppress(Exception):
                await client.delete(MACHINES, name, namespace=namespace)
        with contextlib.suppress(Exception):
            await client.delete(CLUSTERS, "biz", namespace=namespace)
        await until(
            "the Cluster and its Machines deleted",
            lambda: nothing_left(client, namespace),
            300,
        )
        kubectl.run("delete", "namespace", namespace, "--wait=false")
        kubectl.run("delete", "persistentvolume", *volumes)


async def machines_where(client: Client, namespace: str, package: str, count: int) -> bool:
    items = (await client.list(MACHINES, namespace=namespace)).items
    return len(items) == count and all(
        (m.get("status") or {}).get("packageVersion") == package
        and (condition(m, "Ready") or {}).get("status") == "True"
        for m in items
    )


async def rollout_where(client: Client, namespace: str, phase: str) -> Object | None:
    obj = await client.get(ROLLOUTS, "app-v2", namespace=namespace)
    return obj if (obj.get("status") or {}).get("phase") == phase else None


async def both_under_way(client: Client, namespace: str, package: str) -> bool:
    events = (await client.list(EVENTS, namespace=namespace)).items
    upgrading = any(e["reason"] == "StepStarted" and f"({package})" in e["note"] for e in events)
    rollout = await client.get(ROLLOUTS, "app-v2", namespace=namespace)
    batches = (rollout.get("status") or {}).get("batches") or []
    return upgrading and bool(batches) and batches[0].get("changed") == 1


async def nothing_left(client: Client, namespace: str) -> bool:
    left = (await client.list(MACHINES, namespace=namespace)).items
    left += (await client.list(CLUSTERS, namespace=namespace)).items
    return not left


def retag(cluster: LocalCluster, tag: str) -> None:
    """The imported image under a second tag in the real node's containerd (``ctr``)."""
    source = kokpit_image.image_name(kokpit_image.installed_version())
    target = f"{REPOSITORY}/kokpit:{tag}"
    for state in cluster.supervisor.state()[realnode.STATE_KEY]:
        node = realnode.RealNode(**state)
        subprocess.run(
            [
                *("ctr", "--address", str(node.paths.socket), "-n", "k8s.io"),
                *("images", "tag", "--force", source, target),
            ],
            check=True,
            capture_output=True,
        )


# -- leadership -----------------------------------------------------------------------------


async def test_killing_the_leader_hands_over_within_the_lease_and_only_the_leader_reconciles(
    installed: Kubectl, client: Client
) -> None:
    kubectl = installed
    operator = "cluster"
    # Something to reconcile: a Cluster whose package version does not exist (it only gets
    # a condition saying so).
    namespace = f"leader-{secrets.token_hex(3)}"
    kubectl.run("create", "namespace", namespace)
    bind_namespaced(kubectl, "cluster-operator", namespace)
    await client.create(CLUSTERS, cluster(namespace, f"missing-{secrets.token_hex(3)}"))
    try:
        await handovers(kubectl, operator)
    finally:
        await client.delete(CLUSTERS, "biz", namespace=namespace)
        kubectl.run("delete", "namespace", namespace, "--wait=false")


async def handovers(kubectl: Kubectl, operator: str) -> None:
    await settled_leader(kubectl, operator)
    identity = holder(kubectl, operator)
    first = leader_pod(kubectl, operator)
    follower = next(p for p in pods(kubectl, operator) if p["metadata"]["name"] != first)
    leader = next(p for p in pods(kubectl, operator) if p["metadata"]["name"] == first)
    await until("the leader's first reconcile", lambda: first_reconcile(leader), 60)
    assert reconciles(follower) == 0, "a follower reconciled"
    transitions = lease_transitions(kubectl, operator)

    # SIGKILL of the leader's process: no release. Its container restarts in the same pod,
    # as a new process with an identity of its own; whichever replica takes the Lease waits
    # it out first.
    watch = LeaseWatch(kubectl, operator)
    watch.sample()
    killed_at = time.monotonic()
    for pid in container_pids(leader):
        os.kill(pid, signal.SIGKILL)
    await watch.until("a new leader", lambda w: holder(kubectl, operator) != identity, 60)
    took = time.monotonic() - killed_at
    assert took <= duration(kubectl, operator), f"handover after {took:.1f} s"
    assert lease_transitions(kubectl, operator) == transitions + 1
    print(f"SIGKILL of the leader: {leader_pod(kubectl, operator)} leads after {took:.1f} s")

    # Only the leader reconciles: the other replica (restarted or not) has reconciled nothing
    # since it last started.
    wait_available(kubectl)
    await asyncio.sleep(5)
    now = leader_pod(kubectl, operator)
    for pod in pods(kubectl, operator):
        if pod["metadata"]["name"] != now:
            assert reconciles(pod) == 0, f"{pod['metadata']['name']} reconciled as a follower"
    restarted = next(p for p in pods(kubectl, operator) if p["metadata"]["name"] == first)
    assert restarted["status"]["containerStatuses"][0]["restartCount"] >= 1

    # Deleting the leader's pod (SIGTERM): it releases the Lease, the other takes over at once.
    second = leader_pod(kubectl, operator)
    watch = LeaseWatch(kubectl, operator)
    watch.sample()
    deleted_at = time.monotonic()
    kubectl.run("delete", "pod", "-n", SYSTEM, second, "--wait=false")
    await watch.until(
        "a new leader", lambda w: leader_pod(kubectl, operator) not in ("", second), 60
    )
    took = time.monotonic() - deleted_at
    assert took <= duration(kubectl, operator), f"handover after {took:.1f} s"
    print(f"deletion of the leader's pod: handover after {took:.1f} s")
    wait_available(kubectl)


async def settled_leader(kubectl: Kubectl, operator: str) -> None:
    """Wait until one of the operator's current pods leads (after a rollout, the Lease may
    still name a pod that is gone until its successor takes over)."""

    async def leads() -> bool:
        names = {p["metadata"]["name"] for p in pods(kubectl, operator)}
        return leader_pod(kubectl, operator) in names

    await until(f"a leader among the {operator} pods", leads, 60)


async def test_restarting_the_nodes_container_runtime_keeps_every_lease_renewed(
    installed: Kubectl, real_meta_cluster: LocalCluster
) -> None:
    kubectl = installed
    for operator in OPERATORS:
        await settled_leader(kubectl, operator)
    watches = [LeaseWatch(kubectl, operator) for operator in OPERATORS]
    for w in watches:
        w.sample()
    supervisor = real_meta_cluster.supervisor
    (state,) = supervisor.state()[realnode.STATE_KEY]
    containerd = realnode.RealNode(**state).process("containerd")
    before = supervisor.state()["processes"][containerd]["pid"]
    supervisor.restart(containerd)
    assert supervisor.state()["processes"][containerd]["pid"] != before
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        for w in watches:
            w.sample()
        await asyncio.sleep(0.25)
    for w in watches:
        limit = duration(kubectl, w.operator)
        assert w.longest_gap <= limit, f"{w.operator}: unrenewed for {w.longest_gap:.1f} s"
        print(f"containerd restart: {w.operator} holders {w.holders}, gap {w.longest_gap:.1f} s")
    wait_available(kubectl)
