"""A business control plane as real pods on the meta-cluster's real node, through the
Cluster-Operator (``kokpit operator cluster`` as its own process, with the permissions of
config/rbac and the kubernetes runtime's flags for the local meta-cluster): created with three
etcd members, used with kubectl through its Service, upgraded v1.35.4 → v1.36.3 one component
at a time, a broken upgrade rolled back, the objects kept, and deleted without a trace.

Every component's version is read from the component itself: kube-apiserver's ``/version``
through the Service and on its pod; each etcd member's ``/version`` and member list on its
client port (TLS, with kube-apiserver's etcd client certificate, its name checked against the
member's DNS name); the controller-manager's and scheduler's ``kubernetes_build_info`` metric
on their secure ports, as the admin (neither serves ``/version``). Starts a real kubelet,
containerd and kube-proxy (the session's real node: one real node per machine at a time).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.kube_on_kube import (
    STORAGE_CLASS,
    HostedControlPlane,
    cond,
    expected,
    local_volumes,
    running,
)
from kokpit.api.v1alpha1 import CLUSTER_PACKAGE_VERSIONS as PACKAGE_VERSIONS
from kokpit.api.v1alpha1 import CLUSTERS
from kokpit.controllers.cluster import access
from kokpit.local import Kubectl, KubectlError, LocalCluster
from kokpit.local.versions import Release
from kokpit.providers.controlplane import ORDER
from kokpit.providers.controlplane.releases import cluster_package
from kokpit.runtime import Client, ClientConfig, NotFound
from kokpit.runtime.resources import EVENTS, SECRETS
from tests.e2e.operators import operator_process, write_kubeconfig
from tests.e2e.rbac import operator_identity
from tests.e2e.support import install_crds

OLD, NEW = Release("v1.35.4"), Release("v1.36.3")
#: What deleting a Cluster must leave none of (by its label).
KINDS = "pods,services,secrets,persistentvolumeclaims,networkpolicies,statefulsets,deployments"


@pytest.fixture(scope="module")
def real_crds(real_kubectl: Kubectl) -> Kubectl:
    """kokpit's CRDs in the meta-cluster with a real node (the session's own fixture)."""
    return install_crds(real_kubectl)


@pytest.fixture
async def real_client(real_meta_cluster: LocalCluster) -> AsyncIterator[Client]:
    async with Client(ClientConfig.from_kubeconfig(real_meta_cluster.kubeconfig)) as c:
        yield c


def leader(kubectl: Kubectl, lease: str) -> str:
    """Who holds the Lease ``kube-system/<lease>`` ("" if nobody, or if there is none)."""
    try:
        spec = kubectl.get("lease", "-n", "kube-system", lease)["spec"]
    except KubectlError:
        return ""
    return str(spec.get("holderIdentity") or "")


def seconds(timestamp: str) -> float:
    return dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def ready_after(pod: dict[str, Any]) -> float:
    """Seconds from the pod's creation to its Ready condition (the API's 1 s resolution)."""
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    return seconds(ready["lastTransitionTime"]) - seconds(pod["metadata"]["creationTimestamp"])


def rss_by_component(business: HostedControlPlane) -> dict[str, float]:
    """MiB of resident memory per component: its containers' processes on this host (found by
    the pod's cgroup), the pod sandbox's pause excluded."""
    rss: dict[str, float] = {}
    for component in ORDER:
        for pod in business.pods(component):
            uid = pod["metadata"]["uid"]
            marks = (f"pod{uid}", f"pod{uid.replace('-', '_')}")
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                with contextlib.suppress(OSError):
                    if not any(m in (proc / "cgroup").read_text() for m in marks):
                        continue
                    if (proc / "comm").read_text().strip() == "pause":
                        continue
                    status = (proc / "status").read_text()
                    kib = next(
                        int(line.split()[1])
                        for line in status.splitlines()
                        if line.startswith("VmRSS:")
                    )
                    rss[component] = rss.get(component, 0.0) + kib / 1024
    return rss


@pytest.mark.slow  # several minutes: real pods, three etcd members, two upgrades
@pytest.mark.timeout(1800)
async def test_a_control_plane_on_the_real_node_upgrades_rolls_back_and_leaves_nothing(
    real_crds: Kubectl, real_client: Client, real_meta_cluster: LocalCluster, tmp_path: Path
) -> None:
    kubectl, client = real_crds, real_client
    namespace = f"kube-on-kube-{secrets.token_hex(3)}"
    kubectl.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])
    admin = ClientConfig.from_kubeconfig(real_meta_cluster.kubeconfig)
    identity = operator_identity(kubectl, admin, "cluster-operator", [namespace])
    tag = secrets.token_hex(3)
    old, new, broken = f"old-{tag}", f"new-{tag}", f"broken-{tag}"
    await client.create(PACKAGE_VERSIONS, cluster_package(old, OLD, deadline_seconds=240))
    await client.create(PACKAGE_VERSIONS, cluster_package(new, NEW, deadline_seconds=240))
    await client.create(
        PACKAGE_VERSIONS,
        cluster_package(broken, NEW, apiserver_flags={"no-such-flag": "x"}, deadline_seconds=40),
    )
    args = [
        "--runtimes",
        "kubernetes",
        "--control-plane-node-selector",
        "kokpit.io/real-node=true",
        "--image-repository",
        "localhost/kokpit",
        "--etcd-storage-class",
        STORAGE_CLASS,
    ]
    volumes = local_volumes(kubectl, tmp_path / "volumes", 3)
    kubeconfig = write_kubeconfig(identity, tmp_path / "cluster-operator.kubeconfig")
    with operator_process("cluster", kubeconfig, tmp_path / "cluster-operator.log", args) as op:
        await op.start()

        # 1. Created: three etcd members and the other components, as real pods on the real
        # node, Ready; kubectl works through the Service.
        created = time.monotonic()
        await client.create(
            CLUSTERS,
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": "biz", "namespace": namespace},
                "spec": {
                    "packageVersion": old,
                    "runtime": "kubernetes",
                    "controlPlane": {"etcdReplicas": 3, "replicas": 1},
                },
            },
        )
        await op.wait(
            lambda: _where(client, namespace, lambda o: running(o, OLD.version)),
            "the Cluster Running v1.35.4",
            600,
        )
        to_ready = time.monotonic() - created
        business = HostedControlPlane(kubectl, namespace, "biz", tmp_path)
        nodes = {n["metadata"]["name"]: n for n in kubectl.get("nodes")["items"]}
        readiness: dict[str, list[float]] = {}
        for component in ORDER:
            pods = business.pods(component)
            assert len(pods) == (3 if component == "etcd" else 1), component
            for pod in pods:
                node = nodes[pod["spec"]["nodeName"]]
                assert node["metadata"]["labels"].get("kokpit.io/real-node") == "true", pod
                readiness.setdefault(component, []).append(ready_after(pod))
        assert business.versions() == expected(OLD)
        biz = business.kubectl_via_service()
        biz.run("create", "namespace", "keep")
        biz.run("create", "configmap", "keep", "-n", "keep", "--from-literal=answer=42")
        biz.run("create", "secret", "generic", "keep", "-n", "keep", "--from-literal=k=v")
        # The controller-manager and the scheduler reach their API server by its Service's
        # name (the cluster DNS) and work: each holds its leader Lease.
        for lease in ("kube-controller-manager", "kube-scheduler"):
            for _ in range(60):
                if leader(biz, lease):
                    break
                await asyncio.sleep(1)
            assert leader(biz, lease), f"{lease} holds no Lease"
        # The operator runs on the host, outside the meta-cluster, and reached the business API
        # server by its Service name all the same (looked up through the meta-cluster): it
        # bound kokpit's own role there and issued the hosts' bootstrap token.
        for _ in range(60):
            with contextlib.suppress(KubectlError):
                biz.get("clusterrolebinding", access.ROLE_NAME)
                break
            await asyncio.sleep(1)
        assert (
            biz.get("clusterrolebinding", access.ROLE_NAME)["roleRef"]["name"] == access.ROLE_NAME
        )
        mirror = await op.wait(
            lambda: _secret(client, namespace, "biz-bootstrap-token"), "the bootstrap token", 60
        )
        token_id = base64.b64decode(mirror["data"]["token-id"]).decode()
        assert biz.get("secret", "-n", "kube-system", f"bootstrap-token-{token_id}")
        policy = kubectl.get("networkpolicy", "-n", namespace, "biz-etcd")
        assert policy["spec"]["podSelector"]["matchLabels"]["kokpit.io/component"] == "etcd"
        rss = rss_by_component(business)

        # 2. Upgraded one component at a time, in version-skew order.
        await client.patch(CLUSTERS, "biz", {"spec": {"packageVersion": new}}, namespace=namespace)
        await op.wait(
            lambda: _where(client, namespace, lambda o: running(o, NEW.version)),
            "the Cluster Running v1.36.3",
            900,
        )
        assert business.versions() == expected(NEW)
        events = (await client.list(EVENTS, namespace=namespace)).items
        steps = sorted(
            (e["eventTime"] or e["metadata"]["creationTimestamp"], e["note"])
            for e in events
            if e["reason"] == "StepStarted" and f"({new})" in e["note"]
        )
        assert [note.split(" ")[0] for _, note in steps] == list(ORDER), steps

        # 3. A broken kube-apiserver: never Ready, rolled back; the old pod served throughout.
        await client.patch(
            CLUSTERS, "biz", {"spec": {"packageVersion": broken}}, namespace=namespace
        )
        obj = await op.wait(
            lambda: _where(
                client,
                namespace,
                lambda o: cond(o, "RolledBack").get("status") == "True" and running(o, NEW.version),
            ),
            "the broken upgrade rolled back",
            600,
        )
        assert obj["status"]["failedPackageVersion"] == broken
        assert business.versions() == expected(NEW)

        # 4. The objects are still there.
        assert biz.get("configmap", "-n", "keep", "keep")["data"] == {"answer": "42"}
        assert base64.b64decode(biz.get("secret", "-n", "keep", "keep")["data"]["k"]) == b"v"

        # 5. Deleted: nothing of it is left in the meta-cluster.
        await client.delete(CLUSTERS, "biz", namespace=namespace)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 180
        left: list[str] = ["?"]
        while loop.time() < deadline:
            items = kubectl.get(KINDS, "-n", namespace, "-l", "kokpit.io/cluster=biz")["items"]
            left = [f"{i['kind']}/{i['metadata']['name']}" for i in items]
            with contextlib.suppress(NotFound):
                await client.get(CLUSTERS, "biz", namespace=namespace)
                left.append("Cluster/biz")
            if not left:
                break
            await asyncio.sleep(2)
        assert left == [], f"left after deletion: {left}"
        for suffix in ("pki", "admin-kubeconfig", "kokpit-kubeconfig", "kubeconfigs"):
            with pytest.raises(NotFound):
                await client.get(SECRETS, f"biz-{suffix}", namespace=namespace)
    for name in (old, new, broken):
        await client.delete(PACKAGE_VERSIONS, name)
    kubectl.run("delete", "namespace", namespace, "--wait=false")
    kubectl.run("delete", "persistentvolume", *volumes)
    measured = {
        "seconds_to_cluster_ready": round(to_ready, 1),
        "seconds_pod_created_to_ready": readiness,
        "rss_mib": {k: round(v, 1) for k, v in rss.items()},
        "rss_mib_total": round(sum(rss.values()), 1),
    }
    print("kube-on-kube on the real node:", json.dumps(measured))


async def _secret(client: Client, namespace: str, name: str) -> dict[str, Any] | None:
    with contextlib.suppress(NotFound):
        return await client.get(SECRETS, name, namespace=namespace)
    return None


async def _where(client: Client, namespace: str, check: Any) -> dict[str, Any] | None:
    with contextlib.suppress(NotFound):
        obj = await client.get(CLUSTERS, "biz", namespace=namespace)
        return obj if check(obj) else None
    return None
