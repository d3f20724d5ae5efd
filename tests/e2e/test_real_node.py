"""A real node in the local meta-cluster: a kubelet, containerd and kube-proxy that run pods.

Every test here starts a real kubelet, so it needs root, and one runs on a machine at a time
(a real node's kube-proxy chains are the machine's); the last one checks that ``down`` leaves
the machine as ``up`` found it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kokpit.local import Assets, Kubectl, LocalCluster, process, realnode
from kokpit.local.images import write_image

#: A test image: CoreDNS (a static binary from the build) answering /health and /ready.
COREFILE = b".:5353 {\n  health :8080\n  ready :8181\n  whoami\n  log\n}\n"
IMAGE = "kokpit.local/test-coredns:1"


def coredns_image(assets: Assets, directory: Path) -> Path:
    return write_image(
        directory / "test-coredns.tar",
        name=IMAGE,
        files={"/coredns": assets.bin("coredns"), "/etc/coredns/Corefile": COREFILE},
        entrypoint=["/coredns", "-conf", "/etc/coredns/Corefile"],
    )


def pod_and_service(name: str, namespace: str) -> list[dict[str, Any]]:
    labels = {"app": name}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nodeSelector": {realnode.LABEL: "true"},
            "tolerations": [{"key": realnode.LABEL, "operator": "Exists"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "dns",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "readinessProbe": {
                        "httpGet": {"path": "/ready", "port": 8181},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    return [pod, service]


def wait_ready(kubectl: Kubectl, name: str, namespace: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        pod = kubectl.get("pod", name, "-n", namespace)
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if conditions.get("Ready") == "True":
            return pod
        assert time.monotonic() < deadline, f"pod {name} not Ready: {pod['status']}"
        time.sleep(0.5)


@pytest.fixture
def real_namespace(real_kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"real-{os.getpid()}-{request.node.name[:20].lower().replace('_', '-')}"
    real_kubectl.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])
    yield name
    real_kubectl.run("delete", "namespace", name, "--wait=false")


def test_the_real_node_registers_ready_labelled_and_tainted(
    real_kubectl: Kubectl, real_node: str
) -> None:
    node = real_kubectl.get("node", real_node)
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert node["metadata"]["labels"][realnode.LABEL] == "true"
    assert realnode.TAINT in node["spec"]["taints"]
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    [internal] = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
    assert not ipaddress.ip_address(internal).is_loopback


def test_a_pod_from_a_local_image_runs_with_probes_logs_exec_and_a_service(
    real_meta_cluster: LocalCluster,
    real_kubectl: Kubectl,
    real_namespace: str,
    assets: Assets,
    tmp_path: Path,
) -> None:
    archive = coredns_image(assets, tmp_path)
    assert realnode.load_image(real_meta_cluster.supervisor, archive) == ["kokpit-real-0"]
    real_kubectl.apply(pod_and_service("dns", real_namespace))
    pod = wait_ready(real_kubectl, "dns", real_namespace)
    ip = ipaddress.ip_address(pod["status"]["podIP"])
    assert ip in ipaddress.ip_network(realnode.POD_SUBNETS), "a real pod IP, not KWOK's"
    assert pod["spec"]["nodeName"] == "kokpit-real-0"
    # The readiness probe really ran against the container: the kubelet went through it.
    [status] = pod["status"]["containerStatuses"]
    assert status["ready"] is True
    assert status["imageID"], "containerd reports the image it ran"

    logs = real_kubectl.run("logs", "dns", "-n", real_namespace)
    assert "CoreDNS-" in logs
    version = real_kubectl.run("exec", "dns", "-n", real_namespace, "--", "/coredns", "-version")
    assert version.startswith("CoreDNS-")

    service = real_kubectl.get("service", "dns", "-n", real_namespace)
    cluster_ip = service["spec"]["clusterIP"]
    deadline = time.monotonic() + 30
    while True:  # kube-proxy writes the Service's rules within a sync period
        try:
            with urllib.request.urlopen(f"http://{cluster_ip}/health", timeout=2) as resp:
                assert resp.read() == b"OK"
                break
        except OSError:
            assert time.monotonic() < deadline, f"ClusterIP {cluster_ip} never answered"
            time.sleep(0.5)


def machine_state() -> dict[str, list[str]]:
    """What a real node may change on this machine, each read with the host's own tools."""
    state: dict[str, list[str]] = {}
    for binary in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            out = subprocess.run(
                [f"{binary}-save", "-t", table], capture_output=True, text=True, check=False
            ).stdout
            state[f"{binary}/{table}"] = sorted(
                line.split()[0] for line in out.splitlines() if line.startswith(":")
            )
    state["mounts"] = sorted(
        line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
    )
    state["sysctls"] = [
        f"{name}={Path('/proc/sys', name).read_text().strip()}"
        for name in (
            "net/ipv4/ip_forward",
            "net/ipv4/conf/all/route_localnet",
            "vm/overcommit_memory",
            "vm/panic_on_oom",
            "kernel/panic",
            "kernel/panic_on_oops",
        )
    ]
    cgroups: list[str] = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] in ("cgroup", "cgroup2"):
            cgroups += [d for d, _, _ in os.walk(fields[1])]
    state["cgroups"] = sorted(cgroups)
    links = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    state["links"] = sorted(link["ifname"] for link in json.loads(links.stdout))
    netns = Path("/run/netns")
    state["netns"] = sorted(p.name for p in netns.iterdir()) if netns.is_dir() else []
    state["dirs"] = [
        d for d in ("/run/netns", "/run/containerd", "/var/log/containers") if Path(d).exists()
    ]
    return state


@pytest.mark.real_node
@pytest.mark.real_node_alone
@pytest.mark.slow
def test_down_leaves_the_machine_as_up_found_it(
    assets: Assets, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp_path = tmp_path_factory.mktemp("clean")  # short: the kubelet's sockets live in it
    # A release directory like the cache's, with an image archive dropped into its images/:
    # up imports it, so the pod below runs only if that works.
    release = tmp_path / "release"
    release.mkdir()
    for binary in assets.root.iterdir():
        if binary.is_file():
            (release / binary.name).symlink_to(binary)
    coredns_image(assets, release / "images")
    before = machine_state()
    cluster = LocalCluster(tmp_path / "meta")
    kubectl = Kubectl(assets.bin("kubectl"), cluster.kubeconfig)
    try:
        cluster.up(
            Assets(release, assets.kubernetes_version), progress=lambda _: None, real_nodes=1
        )
        kubectl.apply(pod_and_service("dns", "default"))
        wait_ready(kubectl, "dns", "default")
        during = machine_state()
        changed = [key for key in before if before[key] != during[key]]
        # Proof that the check below can fail: a running node changes each of these.
        assert {"iptables/nat", "mounts", "cgroups", "links"} <= set(changed), changed
    finally:
        cluster.down()
    after = machine_state()
    left = {k: sorted(set(before[k]) ^ set(after[k])) for k in before if before[k] != after[k]}
    assert left == {}, "down must undo every change (listed: what differs from before up)"
    assert not list(cluster.layout.root.glob("real/*/run")), "the run directory is gone"


@pytest.mark.real_node
@pytest.mark.real_node_alone
@pytest.mark.slow
def test_down_after_a_killed_up_stops_the_node_and_cleans_the_machine(
    assets: Assets, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = tmp_path_factory.mktemp("killed") / "meta"
    before = machine_state()
    kokpit = [sys.executable, "-m", "kokpit", "local", "--data-dir", str(data)]
    up = subprocess.Popen(
        [*kokpit, "up", "--real-nodes", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state = data / "state.json"
    deadline = time.monotonic() + 120
    try:
        while "kokpit-real-0.kubelet" not in (state.read_text() if state.exists() else ""):
            assert up.poll() is None, "up ended before the kubelet started"
            assert time.monotonic() < deadline, "the kubelet never started"
            time.sleep(0.1)
    finally:
        up.kill()  # half-way: the node may not even be Ready
        up.wait()
    processes = json.loads(state.read_text())["processes"]
    assert {"kokpit-real-0.containerd", "kokpit-real-0.kubelet"} <= processes.keys()
    down = subprocess.run([*kokpit, "down"], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    for name, entry in processes.items():  # (a zombie left to an init that never reaps is dead)
        assert not process.alive(process.ProcessRef.from_json(entry)), f"{name} still runs"
    after = machine_state()
    left = {k: sorted(set(before[k]) ^ set(after[k])) for k in before if before[k] != after[k]}
    assert left == {}, "down must undo every change (listed: what differs from before up)"
