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
import os
import re
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kokpit.api.v1alpha1 import CLUSTER_PACKAGE_VERSIONS as PACKAGE_VERSIONS
from kokpit.api.v1alpha1 import CLUSTERS
from kokpit.controllers.cluster import access
from kokpit.local import Kubectl, KubectlError, LocalCluster
from kokpit.local.assets import find, read_manifest
from kokpit.local.versions import Release
from kokpit.providers.controlplane import ORDER
from kokpit.providers.controlplane.releases import cluster_package
from kokpit.runtime import Client, ClientConfig, NotFound
from kokpit.runtime.resources import EVENTS, SECRETS
from tests.e2e.operators import operator_process, write_kubeconfig
from tests.e2e.rbac import operator_identity
from tests.e2e.support import install_crds

REAL_NODE = {"kokpit.io/real-node": "true"}
#: Storage for etcd: the local meta-cluster has no provisioner, so volumes on the real node's
#: disk are made for it (an emptyDir would not do: a member whose pod is replaced, as an
#: upgrade of etcd does, loses its data and cannot rejoin; see the kubernetes runtime).
STORAGE_CLASS = "kokpit-real-local"
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


def local_volumes(kubectl: Kubectl, root: Path, count: int) -> list[str]:
    """A StorageClass of statically made volumes, and ``count`` of them: directories on this
    host, owned by the user the pods run as, bound to pods on the real node."""
    node = kubectl.get("nodes", "-l", "kokpit.io/real-node=true")["items"][0]["metadata"]["name"]
    affinity = {
        "required": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                    ]
                }
            ]
        }
    }
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
        }
    ]
    names = []
    for i in range(count):
        directory = root / f"etcd-{i}"
        directory.mkdir(parents=True)
        os.chown(directory, 65532, 65532)
        directory.chmod(0o700)
        name = f"{STORAGE_CLASS}-{secrets.token_hex(3)}"
        names.append(name)
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": "8Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": STORAGE_CLASS,
                    "hostPath": {"path": str(directory), "type": "Directory"},
                    "nodeAffinity": affinity,
                },
            }
        )
    kubectl.apply(objects)
    return names


def https_get(
    address: str, port: int, path: str, context: ssl.SSLContext, server_name: str, body: str = ""
) -> Any:
    """One HTTP/1.0 request over TLS to ``address`` (checked as ``server_name``); the JSON, or
    the text if it is not JSON."""
    method = "POST" if body else "GET"
    request = (
        f"{method} {path} HTTP/1.0\r\nHost: {server_name}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )
    with (
        socket.create_connection((address, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        tls.sendall(request.encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert status == 200, f"{method} {path} on {address}:{port}: {head!r} {payload[:200]!r}"
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode()


class BusinessCluster:
    """What a test reads of the business cluster ``name``, from the host: kubectl through the
    Service's ClusterIP (the host does not resolve ``.svc`` names; the certificate is checked
    against the Service's name), and each component on its pod's address."""

    def __init__(self, kubectl: Kubectl, namespace: str, name: str, tmp: Path) -> None:
        self.kubectl, self.namespace, self.name, self.tmp = kubectl, namespace, name, tmp
        self.pki = {
            k: base64.b64decode(v)
            for k, v in kubectl.get("secret", "-n", namespace, f"{name}-pki")["data"].items()
        }
        for file, data in self.pki.items():
            (tmp / file).write_bytes(data)
            (tmp / file).chmod(0o600)

    def kubectl_via_service(self) -> Kubectl:
        secret = self.kubectl.get("secret", "-n", self.namespace, f"{self.name}-admin-kubeconfig")
        config = json.loads(base64.b64decode(secret["data"]["value"]))
        service = self.kubectl.get("service", "-n", self.namespace, f"{self.name}-kube-apiserver")
        cluster = config["clusters"][0]["cluster"]
        assert cluster["server"] == f"https://{self.name}-kube-apiserver.{self.namespace}.svc:6443"
        cluster["tls-server-name"] = f"{self.name}-kube-apiserver.{self.namespace}.svc"
        cluster["server"] = f"https://{service['spec']['clusterIP']}:6443"
        path = self.tmp / "admin-via-service.kubeconfig"
        path.write_text(json.dumps(config))
        return Kubectl(self.kubectl.binary, path)

    def pods(self, component: str) -> list[dict[str, Any]]:
        selector = f"kokpit.io/cluster={self.name},kokpit.io/component={component}"
        items: list[dict[str, Any]] = self.kubectl.get(
            "pods", "-n", self.namespace, "-l", selector
        )["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def etcd(self, pod: dict[str, Any], path: str, body: str = "") -> Any:
        context = ssl.create_default_context(cafile=str(self.tmp / "etcd-ca.crt"))
        context.load_cert_chain(
            self.tmp / "apiserver-etcd-client.crt", self.tmp / "apiserver-etcd-client.key"
        )
        host = f"{pod['metadata']['name']}.{self.name}-etcd.{self.namespace}.svc"
        return https_get(pod["status"]["podIP"], 2379, path, context, host, body)

    def secure_port(self, pod: dict[str, Any], port: int, path: str) -> Any:
        """A Kubernetes component's secure port, as the admin (its serving certificate is
        self-signed, so not checked here)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(self.tmp / "admin.crt", self.tmp / "admin.key")
        return https_get(pod["status"]["podIP"], port, path, context, "localhost")

    def versions(self) -> dict[str, set[str]]:
        """Each component's versions, as its running pods report them on their endpoints."""
        found: dict[str, set[str]] = {}
        members: set[tuple[str, ...]] = set()
        for pod in self.pods("etcd"):
            found.setdefault("etcd", set()).add("v" + self.etcd(pod, "/version")["etcdserver"])
            listed = self.etcd(pod, "/v3/cluster/member/list", "{}")["members"]
            members.add(tuple(sorted(m["name"] for m in listed)))
        assert members == {tuple(f"{self.name}-etcd-{i}" for i in range(3))}, (
            f"one etcd cluster of three members, seen alike by each: {members}"
        )
        via_service = self.kubectl_via_service()
        said = json.loads(via_service.run("get", "--raw", "/version"))
        found["kube-apiserver"] = {said["gitVersion"]}
        for pod in self.pods("kube-apiserver"):
            context = ssl.create_default_context(cafile=str(self.tmp / "ca.crt"))
            context.load_cert_chain(self.tmp / "admin.crt", self.tmp / "admin.key")
            host = f"{self.name}-kube-apiserver.{self.namespace}.svc.cluster.local"
            said = https_get(pod["status"]["podIP"], 6443, "/version", context, host)
            found["kube-apiserver"].add(said["gitVersion"])
        # Neither serves /version: their build_info metric says it (read as the admin).
        for component, port in (("kube-controller-manager", 10257), ("kube-scheduler", 10259)):
            for pod in self.pods(component):
                metrics = self.secure_port(pod, port, "/metrics")
                said = re.search(
                    r'^kubernetes_build_info\{[^}]*git_version="([^"]+)"', metrics, re.M
                )
                assert said, f"{component} reports no kubernetes_build_info"
                found.setdefault(component, set()).add(said.group(1))
        return found


def leader(kubectl: Kubectl, lease: str) -> str:
    """Who holds the Lease ``kube-system/<lease>`` ("" if nobody, or if there is none)."""
    try:
        spec = kubectl.get("lease", "-n", "kube-system", lease)["spec"]
    except KubectlError:
        return ""
    return str(spec.get("holderIdentity") or "")


def expected(release: Release) -> dict[str, set[str]]:
    assets = find(release)
    assert assets is not None, f"{release.version} is not built"
    etcd = str(read_manifest(assets.root)["etcd"])
    v = release.version
    return {
        "etcd": {etcd},
        "kube-apiserver": {v},
        "kube-controller-manager": {v},
        "kube-scheduler": {v},
    }


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            found: dict[str, Any] = c
            return found
    return {}


def running(obj: dict[str, Any], version: str) -> bool:
    s = obj.get("status", {})
    return s.get("kubernetesVersion") == version and cond(obj, "Ready").get("status") == "True"


def seconds(timestamp: str) -> float:
    return dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def ready_after(pod: dict[str, Any]) -> float:
    """Seconds from the pod's creation to its Ready condition (the API's 1 s resolution)."""
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    return seconds(ready["lastTransitionTime"]) - seconds(pod["metadata"]["creationTimestamp"])


def rss_by_component(business: BusinessCluster) -> dict[str, float]:
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
        business = BusinessCluster(kubectl, namespace, "biz", tmp_path)
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
