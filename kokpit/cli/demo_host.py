"""The real-host part of ``kokpit demo``: a host that joins the business cluster with its own
kubelet.

The host is a real sshd on this machine's address (:mod:`kokpit.providers.machine.sshd`; a
kubelet refuses a loopback node IP). Its MachinePackageVersion installs a private containerd
and a real kubelet over SSH (:mod:`kokpit.local.nodepackages`); the Machine-Operator writes
the bootstrap kubeconfig with the token the Cluster-Operator issued, the kubelet joins by TLS
bootstrap and registers with kokpit's not-ready taint, and once the network operator (played
by the demo) reports the gate, a real pod runs there. The Machine's delete drains the node and
removes the packages, which put the machine back as they found it; :class:`DemoHost` then
stops the sshd and removes its directory.

Its bridge, subnet, cgroup root and ports differ from the real node's (and from the e2e
tests'), so the two kubelets coexist.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kokpit.cli.demo_business import replace_package_versions
from kokpit.cli.demo_machines import GATE, NAMESPACE, REPORTER, network_operator, report_ready
from kokpit.local import Assets, Kubectl, nodepackages
from kokpit.local.host import node_ip
from kokpit.local.images import write_image
from kokpit.providers.machine.sshd import SimulatedHost, start_host_at

NAME = "real-host"
PACKAGE_VERSION = "real-node-v1"
BRIDGE, SUBNET, CGROUP_ROOT = "kokpitd0", "10.89.78.0/24", "/kokpit-demo-host"
KUBELET_PORT, HEALTHZ_PORT = 10380, 10388
PAUSE, WORKLOAD = "kokpit.local/pause:demo", "kokpit.local/sleeper:demo"
POD = "hello-real-host"


class DemoHost:
    """The sshd host, in a short directory of its own (containerd's sockets live under it)."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="kokpit-demo-", dir="/tmp"))
        try:
            self.host: SimulatedHost = start_host_at(self.directory, node_ip())
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise

    def stop(self) -> None:
        """After the Machine is deleted (its package removal runs over this sshd)."""
        self.host.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def story(
    kubectl: Kubectl,
    business: Kubectl,
    assets: Assets,
    demo_host: DemoHost,
    cluster: str,
    say: Callable[[str], None],
) -> None:
    host = demo_host.host
    images = demo_host.directory / "images"
    pause = assets.bin("pause")
    archives = [
        write_image(
            images / "pause.tar", name=PAUSE, files={"/pause": pause}, entrypoint=["/pause"]
        ),
        write_image(
            images / "sleeper.tar", name=WORKLOAD, files={"/sleep": pause}, entrypoint=["/sleep"]
        ),
    ]
    packages = [
        nodepackages.containerd(
            images=[str(a) for a in archives], sandbox_image=PAUSE, bridge=BRIDGE, subnet=SUBNET
        ),
        nodepackages.kubelet(
            version=assets.kubernetes_version,
            binary=str(assets.bin("kubelet")),
            cgroup_root=CGROUP_ROOT,
            port=KUBELET_PORT,
            healthz_port=HEALTHZ_PORT,
        ),
    ]
    replace_package_versions(
        kubectl,
        [
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "MachinePackageVersion",
                "metadata": {"name": PACKAGE_VERSION},
                "spec": {"packages": packages},
            }
        ],
    )
    reporter = network_operator(kubectl)
    kubectl.apply([host.ssh_secret(NAMESPACE, NAME), machine(host, cluster)])
    say(
        f"   Machine {NAME}: a real sshd at {host.address}:{host.port}; MachinePackageVersion "
        f"{PACKAGE_VERSION} installs containerd and kubelet {assets.kubernetes_version} over SSH"
    )
    node = wait(business, "node", lambda n: True, "its kubelet to register")
    for csr in business.get("certificatesigningrequests")["items"]:
        spec, status = csr["spec"], csr.get("status") or {}
        if spec.get("signerName") == "kubernetes.io/kube-apiserver-client-kubelet" and spec[
            "username"
        ].startswith("system:bootstrap:"):
            approved = any(c["type"] == "Approved" for c in status.get("conditions") or [])
            say(
                f"   its kubelet joined by TLS bootstrap: CSR {csr['metadata']['name']} from "
                f"{spec['username']} (the Cluster-Operator's token) "
                f"{'approved' if approved else 'not approved'}"
            )
    if _tainted(node):
        say("   and registered itself with kokpit's taint kokpit.io/not-ready")
    node = wait(business, "node", _ready, "its Node to be Ready")
    runtime = node["status"]["nodeInfo"]["containerRuntimeVersion"]
    say(f"   Node {NAME} Ready ({runtime})")
    business.apply([pod()])
    time.sleep(2)  # what the scheduler makes of it meanwhile
    if not business.get("pod", "-n", "default", POD)["spec"].get("nodeName"):
        say(f"   pod {POD} waits: the node stays tainted until {GATE} is reported")
    asyncio.run(report_ready(reporter, (NAME,)))
    wait(business, "node", lambda n: not _tainted(n), "its taint to go")
    running = wait(
        business,
        "pod",
        lambda p: p["status"].get("phase") == "Running",
        "the pod to run",
        "-n",
        "default",
        name=POD,
    )
    say(
        f"   the gate passes, the taint goes: pod {POD} Running on {running['spec']['nodeName']} "
        f"(pod IP {running['status'].get('podIP')})"
    )


def machine(host: SimulatedHost, cluster: str) -> dict[str, Any]:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "clusterRef": {"name": cluster},
            "executor": "ssh",
            "address": host.address,
            "port": host.port,
            "sshSecretRef": {"name": NAME},
            "packageVersion": PACKAGE_VERSION,
            "readinessGates": [
                {"conditionType": GATE, "reporter": {"namespace": NAMESPACE, "name": REPORTER}}
            ],
        },
    }


def pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": "default"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": NAME},
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "sleep", "image": WORKLOAD, "imagePullPolicy": "Never"}],
        },
    }


def wait(
    kubectl: Kubectl,
    kind: str,
    check: Callable[[dict[str, Any]], bool],
    what: str,
    *args: str,
    name: str = NAME,
    timeout: float = 180,
) -> dict[str, Any]:
    """``kind``/``name`` once it exists and passes ``check``."""
    deadline = time.monotonic() + timeout
    while True:
        found = kubectl.get(kind, "--field-selector", f"metadata.name={name}", *args)
        items: list[dict[str, Any]] = found["items"]
        if items and check(items[0]):
            return items[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}: {items}")
        time.sleep(0.5)


def _ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _tainted(node: dict[str, Any]) -> bool:
    return any(t["key"] == "kokpit.io/not-ready" for t in node["spec"].get("taints") or [])
