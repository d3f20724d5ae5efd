"""Simulated nodes for the local meta-cluster, run by kwok.

A kwok node is an ordinary Node object carrying the ``kwok.x-k8s.io/node=fake`` annotation;
kwok then plays its kubelet: it fills in the status, renews the node's Lease and runs the pods
the real scheduler binds to it. Nodes are named ``<prefix>-<i>`` and created with server-side
apply, so asking for N nodes twice is harmless, and asking for more adds only the missing ones.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from kokpit.local.assets import Assets
from kokpit.local.components import KWOK_NODE_ANNOTATION
from kokpit.local.kubectl import Kubectl

#: Label on every simulated node, to select them.
SIMULATED_LABEL = "kokpit.io/simulated"
DEFAULT_PREFIX = "kwok-node"
#: What each simulated node offers the scheduler.
CAPACITY = {"cpu": "32", "memory": "256Gi", "pods": "110"}


def node(name: str) -> dict[str, Any]:
    """The manifest of one simulated node."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": {
                SIMULATED_LABEL: "true",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"capacity": CAPACITY, "allocatable": CAPACITY},
    }


def ensure_nodes(kubectl: Kubectl, count: int, *, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Make sure nodes ``<prefix>-0 .. <prefix>-(count-1)`` exist; returns their names."""
    names = [f"{prefix}-{i}" for i in range(count)]
    if names:
        kubectl.apply([node(n) for n in names])
    return names


def wait_ready(kubectl: Kubectl, names: list[str], *, timeout_s: float = 300.0) -> None:
    """Block until every named node reports Ready=True.

    Polls one LIST rather than ``kubectl wait``, which checks nodes one at a time (minutes for
    a thousand nodes).
    """
    wanted = set(names)
    deadline = time.monotonic() + timeout_s
    while True:
        out = kubectl.run("get", "nodes", "-o", READY_JSONPATH)
        ready = {
            name
            for name, _, status in (line.partition(" ") for line in out.splitlines())
            if status == "True"
        }
        missing = wanted - ready
        if not missing:
            return
        if time.monotonic() > deadline:
            some = ", ".join(sorted(missing)[:5])
            raise TimeoutError(f"{len(missing)} nodes not Ready after {timeout_s:.0f} s: {some}")
        time.sleep(1.0)


READY_JSONPATH = (
    'jsonpath={range .items[*]}{.metadata.name}{" "}'
    '{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}'
)


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
