"""``kokpit local`` and ``kokpit demo`` as a person runs them: separate processes, each with a
cluster of its own in a temporary data directory."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kokpit.local import Assets, Kubectl
from kokpit.providers.controlplane import ORDER
from tests.e2e.support import eventually
from tests.e2e.test_real_node import machine_state


def kokpit(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kokpit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def uids(kubectl: Kubectl, *what: str) -> dict[str, str]:
    items = kubectl.get(*what)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["uid"] for i in items}


def test_down_and_up_keep_every_object(tmp_path: Path, assets: Assets) -> None:
    data = tmp_path / "cluster"
    local = ("local", "--data-dir", str(data))

    try:
        up = kokpit(*local, "up", "--nodes", "3")
        assert up.returncode == 0, up.stderr
        assert f"export KUBECONFIG={data / 'kubeconfig'}" in up.stdout
        kubectl = Kubectl(assets.bin("kubectl"), data / "kubeconfig")
        kubectl.apply(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "keep"}},
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "cfg", "namespace": "keep"},
                    "data": {"answer": "42"},
                },
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "s", "namespace": "keep"},
                    "stringData": {"token": "t0ps3cret"},
                },
            ]
        )
        before = uids(kubectl, "nodes,namespaces") | uids(
            kubectl, "configmaps,secrets", "-n", "keep"
        )

        again = kokpit(*local, "up")
        assert again.returncode == 0
        assert "already running" in again.stderr

        state = json.loads((data / "state.json").read_text())
        pids = [p["pid"] for p in state["processes"].values()]
        old_port = state["ports"]["apiserver"]
        assert kokpit(*local, "down").returncode == 0
        assert not any(running(pid) for pid in pids), "every component stopped"
        status = kokpit(*local, "status")
        assert status.returncode == 3
        assert "not running" in status.stdout

        # Something else took the API server's port while the cluster was down.
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", old_port))
            squatter.listen()
            up = kokpit(*local, "up")
        assert up.returncode == 0, up.stderr
        new_port = json.loads((data / "state.json").read_text())["ports"]["apiserver"]
        assert new_port != old_port

        after = uids(kubectl, "nodes,namespaces") | uids(
            kubectl, "configmaps,secrets", "-n", "keep"
        )
        assert {k: after.get(k) for k in before} == before, "nothing lost, nothing recreated"
        assert kubectl.get("configmap", "-n", "keep", "cfg")["data"] == {"answer": "42"}

        # A component that dies is named, with its log.
        scheduler = json.loads((data / "state.json").read_text())["processes"]["kube-scheduler"]
        os.kill(scheduler["pid"], signal.SIGKILL)

        def unhealthy() -> subprocess.CompletedProcess[str] | None:
            status = kokpit(*local, "status")
            return status if status.returncode == 1 else None

        status = eventually(unhealthy, timeout=10, what="status to report the dead scheduler")
        line = next(ln for ln in status.stdout.splitlines() if "kube-scheduler" in ln)
        assert "DEAD" in line
        assert str(data / "logs" / "kube-scheduler.log") in line
        assert "      | " in status.stdout, "the tail of its log follows"

    finally:
        kokpit(*local, "down")

    assert kokpit(*local, "down", "--wipe").returncode == 0
    assert not data.exists()


@pytest.mark.slow  # about 150 s
@pytest.mark.real_node_alone  # a real node of its own; checks the machine is left as found
def test_demo_runs_end_to_end(tmp_path: Path, assets: Assets) -> None:
    data = tmp_path / "demo"
    before, hosts_before = machine_state(), set(Path("/tmp").glob("kokpit-demo-*"))
    demo = kokpit("demo", "--no-wait", "--data-dir", str(data), timeout=900)
    assert demo.returncode == 0, demo.stderr
    # Kube-on-kube: team-b's control plane as pods on the real node, kubectl via its Service.
    on_real_node = re.findall(
        r"pod team-b-(etcd|kube-apiserver|kube-controller-manager|kube-scheduler)\S*"
        r"\s+on kokpit-real-0\s+1/1 ready",
        demo.stderr,
    )
    assert sorted(on_real_node) == sorted(ORDER), demo.stderr
    assert re.search(
        r"kubectl through its Service https://10\.96\.[0-9.]+:6443 \(certificate checked for "
        r"team-b-kube-apiserver\.kokpit-demo\.svc\): v1\.36\.3, \d+ namespaces",
        demo.stderr,
    ), demo.stderr
    # A host joins team-a with its own kubelet: TLS bootstrap, kokpit's taint, a real pod.
    assert re.search(
        r"joined by TLS bootstrap: CSR \S+ from system:bootstrap:[a-z0-9]{6} "
        r"\(the Cluster-Operator's token\) approved\n",
        demo.stderr,
    ), demo.stderr
    assert "registered itself with kokpit's taint kokpit.io/not-ready" in demo.stderr
    assert "Node real-host Ready (containerd://" in demo.stderr
    assert "pod hello-real-host waits: the node stays tainted" in demo.stderr
    assert "pod hello-real-host Running on real-host (pod IP 10.89.78." in demo.stderr
    assert "60/60 pods Running" in demo.stderr
    assert "its API server answers v1.35.4" in demo.stderr
    assert "rolls back by itself: k8s-v1.36.3-broken failed its health checks" in demo.stderr
    assert "Ready at v1.36.3; the data is still there" in demo.stderr
    assert "3 nodes joined the business cluster, 3 held unschedulable" in demo.stderr
    assert "every gate passes: 3 nodes schedulable" in demo.stderr
    assert "rolled out in batches of [1, 2]: every host runs hosts-v2" in demo.stderr
    assert "reconcile failed" not in demo.stderr  # operator logs go to a file, not the story
    assert "Task was destroyed" not in demo.stderr
    assert f"export KUBECONFIG={data / 'kubeconfig'}" in demo.stdout
    assert kokpit("local", "--data-dir", str(data), "status").returncode == 3, "demo stopped it"
    # The host's kubelet and containerd went with its Machine, the real node with `down`.
    after = machine_state()
    left = {k: sorted(set(before[k]) ^ set(after[k])) for k in before if before[k] != after[k]}
    assert left == {}, "the demo must undo every change (listed: what differs from before)"
    assert set(Path("/tmp").glob("kokpit-demo-*")) == hosts_before, "the host's directory"
