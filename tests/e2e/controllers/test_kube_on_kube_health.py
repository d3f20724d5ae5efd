"""A kube-on-kube control plane (kubernetes runtime) on the meta-cluster's real node, kept
watched after Ready: each component's container killed with SIGKILL in turn is noticed within
seconds through the watch on the Cluster's workloads (the Cluster names the component, Ready
goes False), the kubelet restarts it — kokpit reports and restarts nothing itself — and the
Cluster is Ready again.

Starts a real kubelet, containerd and kube-proxy (marked ``real_node_alone``: one real node per
machine at a time, before the session's own).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kokpit.api.v1alpha1 import CLUSTER_PACKAGE_VERSIONS as PACKAGE_VERSIONS
from kokpit.api.v1alpha1 import CLUSTERS
from kokpit.local import Assets, Kubectl, LocalCluster
from kokpit.local.versions import Release
from kokpit.providers.controlplane import ORDER
from kokpit.providers.controlplane.releases import cluster_package
from kokpit.runtime import Client, ClientConfig, NotFound
from tests.e2e.operators import operator_process, write_kubeconfig
from tests.e2e.rbac import operator_identity
from tests.e2e.support import install_crds

DETECTION_LIMIT_S = 10.0


@pytest.fixture(scope="module")
def real_cluster(
    assets: Assets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """A meta-cluster of its own with one real node (the session's has kwok nodes only)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("real-meta-cluster"))
    cluster.up(assets, progress=print, real_nodes=1)
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def real_kubectl(real_cluster: LocalCluster, assets: Assets) -> Kubectl:
    return install_crds(Kubectl(assets.bin("kubectl"), real_cluster.kubeconfig))


@pytest.fixture
async def real_client(real_cluster: LocalCluster) -> AsyncIterator[Client]:
    async with Client(ClientConfig.from_kubeconfig(real_cluster.kubeconfig)) as c:
        yield c


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        (c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {}
    )
    return found


def component(obj: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        (c for c in obj.get("status", {}).get("components", []) if c["name"] == name), {}
    )
    return found


def the_pod(kubectl: Kubectl, namespace: str, cluster: str, name: str) -> dict[str, Any]:
    selector = f"kokpit.io/cluster={cluster},kokpit.io/component={name}"
    pods = [
        p
        for p in kubectl.get("pods", "-n", namespace, "-l", selector)["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    found: dict[str, Any] = pods[0]
    return found


def container_processes(pod: dict[str, Any]) -> list[int]:
    """The host pids of the pod's containers (found by the pod's cgroup), its pause excluded."""
    uid = pod["metadata"]["uid"]
    marks = (f"pod{uid}", f"pod{uid.replace('-', '_')}")
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if not any(m in (proc / "cgroup").read_text() for m in marks):
                continue
            if (proc / "comm").read_text().strip() == "pause":
                continue
            pids.append(int(proc.name))
    return pids


def restart_count(pod: dict[str, Any]) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses") or [])


@pytest.mark.real_node_alone  # a meta-cluster with a real node of its own
@pytest.mark.slow  # a few minutes: a real control plane, four containers killed in turn
@pytest.mark.timeout(1200)
async def test_each_real_component_killed_is_reported_and_restarted_by_the_kubelet(
    real_kubectl: Kubectl, real_client: Client, real_cluster: LocalCluster, tmp_path: Path
) -> None:
    kubectl, client = real_kubectl, real_client
    namespace = f"heal-real-{secrets.token_hex(3)}"
    kubectl.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])
    admin = ClientConfig.from_kubeconfig(real_cluster.kubeconfig)
    identity = operator_identity(kubectl, admin, "cluster-operator", [namespace])
    package = f"heal-{secrets.token_hex(3)}"
    await client.create(
        PACKAGE_VERSIONS, cluster_package(package, Release("v1.36.3"), deadline_seconds=240)
    )
    args = [
        *("--runtimes", "kubernetes"),
        *("--control-plane-node-selector", "kokpit.io/real-node=true"),
        *("--image-repository", "localhost/kokpit"),
    ]
    kubeconfig = write_kubeconfig(identity, tmp_path / "cluster-operator.kubeconfig")
    with operator_process("cluster", kubeconfig, tmp_path / "cluster-operator.log", args) as op:
        await op.start()
        await client.create(
            CLUSTERS,
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": "heal", "namespace": namespace},
                "spec": {"packageVersion": package, "runtime": "kubernetes"},
            },
        )
        seen: dict[str, Any] = {}

        async def cluster() -> dict[str, Any]:
            with contextlib.suppress(NotFound):
                seen["obj"] = await client.get(CLUSTERS, "heal", namespace=namespace)
            return dict(seen.get("obj") or {})

        async def ready() -> dict[str, Any] | None:
            obj = await cluster()
            return obj if cond(obj, "Ready").get("status") == "True" else None

        await op.wait(ready, "the Cluster to be Ready on the real node", 600)
        timings: dict[str, tuple[float, float]] = {}
        for name in ORDER:
            # A component may itself be restarting when the Cluster reads Ready: the
            # controller-manager and the scheduler exit when they lose their leader lease while
            # the API server is down, and their pods' readiness trails the exit.
            async def steady(name: str = name) -> tuple[dict[str, Any], list[int]] | None:
                if await ready() is None:
                    return None
                pod = the_pod(kubectl, namespace, "heal", name)
                statuses = pod["status"].get("containerStatuses") or []
                running = statuses and all("running" in s.get("state", {}) for s in statuses)
                pids = container_processes(pod) if running else []
                return (pod, pids) if pids else None

            pod, pids = await op.wait(
                steady, f"{name}'s container to run in a Ready Cluster before it is killed", 300
            )
            restarts = restart_count(pod)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()

            async def reported(name: str = name) -> dict[str, Any] | None:
                obj = await cluster()
                entry = component(obj, name)
                down = entry and not entry["ready"] and cond(obj, "Ready").get("status") == "False"
                return obj if down else None

            obj = await op.wait(reported, f"the Cluster to report {name} down", 60)
            detected = time.monotonic() - killed
            assert f"{name}: " in cond(obj, "Ready")["message"], cond(obj, "Ready")
            assert component(obj, name)["reason"] in ("ReplicasNotReady", "CrashLoopBackOff")
            obj = await op.wait(ready, f"the Cluster to be Ready again after {name}", 300)
            timings[name] = (detected, time.monotonic() - killed)
            pod = the_pod(kubectl, namespace, "heal", name)
            assert restart_count(pod) > restarts, "the kubelet restarted the container"
            assert "restarts" not in component(obj, name), "kokpit restarts nothing here"
        report = ", ".join(
            f"{n}: detected {d:.1f} s, Ready again {r:.1f} s" for n, (d, r) in timings.items()
        )
        print(f"\nkill -9 on the real node → {report}")
        slow = [n for n, (d, _) in timings.items() if d > DETECTION_LIMIT_S]
        assert not slow, f"noticed too late: {report}"
        await client.delete(CLUSTERS, "heal", namespace=namespace)

        async def gone() -> bool:
            try:
                await client.get(CLUSTERS, "heal", namespace=namespace)
            except NotFound:
                return True
            return False

        await op.wait(gone, "the Cluster to be deleted", 120)
    await client.delete(PACKAGE_VERSIONS, package)
    kubectl.run("delete", "namespace", namespace, "--wait=false")
