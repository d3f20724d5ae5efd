"""A business cluster to join Machines to, for tests and benchmarks: created by the real
Cluster-Operator (its own process, ``process`` runtime, so a real kube-apiserver,
controller-manager and scheduler), with a KWOK of its own that plays the kubelet of the nodes
the Machines register.

``lease_seconds`` sets how long a node's Lease lasts (KWOK renews it every quarter): with ten
thousand nodes, the default 40 s would be a thousand renewals a second; the controller-manager's
grace period follows it, so nodes do not go NotReady between renewals."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kokpit.api.v1alpha1.cluster import object_name
from kokpit.local import Assets, Kubectl
from kokpit.local.components import KWOK_NODE_ANNOTATION
from kokpit.local.samples import cluster, cluster_package
from kokpit.local.versions import RELEASES


@dataclass(frozen=True)
class BusinessCluster:
    namespace: str
    name: str
    kubeconfig: Path
    kubectl: Kubectl


@contextlib.contextmanager
def business_cluster(
    meta: Kubectl,
    assets: Assets,
    meta_kubeconfig: Path,
    workdir: Path,
    namespace: str,
    *,
    lease_seconds: int = 40,
) -> Iterator[BusinessCluster]:
    name = "biz"
    workdir.mkdir(parents=True, exist_ok=True)
    release = RELEASES[0]
    grace = {"node-monitor-grace-period": f"{max(20, lease_seconds * 3 // 2)}s"}
    package = cluster_package(
        f"biz-{release.version}", release, controller_manager_flags=grace, deadline_seconds=120
    )
    meta.apply([package])
    with (workdir / "cluster-operator.log").open("wb") as log:
        operator = subprocess.Popen(
            [
                *(sys.executable, "-m", "kokpit", "operator", "cluster"),
                *("--kubeconfig", str(meta_kubeconfig), "--runtimes", "process"),
                *("--process-root", str(workdir / "cp"), "--health-port", "0"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    kwok: subprocess.Popen[bytes] | None = None
    try:
        meta.apply([cluster(namespace, name, f"biz-{release.version}", "process")])
        _wait_ready(meta, namespace, name, operator, workdir)
        secret = json.loads(
            meta.run(
                "get",
                "secret",
                "-n",
                namespace,
                object_name(name, "admin-kubeconfig"),
                "-o",
                "json",
            )
        )
        kubeconfig = workdir / "biz.kubeconfig"
        kubeconfig.write_bytes(base64.b64decode(secret["data"]["value"]))
        kwok = start_kwok(assets, kubeconfig, workdir, lease_seconds=lease_seconds)
        yield BusinessCluster(
            namespace, name, kubeconfig, Kubectl(assets.bin("kubectl"), kubeconfig)
        )
    finally:
        if kwok is not None:
            kwok.terminate()
            kwok.wait(10)
        with contextlib.suppress(subprocess.CalledProcessError):
            meta.run("delete", "cluster", "-n", namespace, name, "--wait=true", "--timeout=60s")
        operator.terminate()
        operator.wait(30)


def start_kwok(
    assets: Assets, kubeconfig: Path, workdir: Path, *, lease_seconds: int = 40
) -> subprocess.Popen[bytes]:
    """KWOK for a business cluster: it plays the kubelet of the nodes annotated for it (the
    ones Machines register), logging to ``workdir/kwok.log``."""
    with (workdir / "kwok.log").open("wb") as log:
        return subprocess.Popen(
            [
                str(assets.bin("kwok")),
                f"--kubeconfig={kubeconfig}",
                f"--config={assets.kwok_stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--server-address=127.0.0.1:{free_port()}",
                "--node-ip=127.0.0.1",
                f"--node-lease-duration-seconds={lease_seconds}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(
    meta: Kubectl, namespace: str, name: str, operator: subprocess.Popen[bytes], workdir: Path
) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if operator.poll() is not None:
            raise RuntimeError(f"the Cluster-Operator exited; see {workdir}/cluster-operator.log")
        obj = json.loads(meta.run("get", "cluster", "-n", namespace, name, "-o", "json"))
        for c in obj.get("status", {}).get("conditions", []):
            if c["type"] == "Ready" and c["status"] == "True":
                return
        time.sleep(1)
    raise TimeoutError(f"business cluster {name} not Ready: {obj.get('status')}")
