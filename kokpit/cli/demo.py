"""``kokpit demo``: the main job, on the embedded local meta-cluster.

It shows the foundation every operator stands on: a real control plane built from Kubernetes'
Go modules, with a real node (kubelet, containerd, kube-proxy) beside kwok nodes, and a workload
placed by the real scheduler. Then the Cluster-Operator keeps business clusters: one as
processes (upgraded, a broken upgrade rolled back), and, with a real node, one as pods on it
(kube-on-kube). Machines join the first: simulated hosts as kwok nodes, and, with a real node,
a host with its own kubelet. It deletes what it made and stops the cluster on Ctrl-C (or at the
end with ``--no-wait``), unless the cluster was already running before the demo started.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from kokpit.cli import demo_business, demo_host, demo_kube, demo_machines
from kokpit.cli.local import cluster_of, print_env
from kokpit.local import (
    AlreadyRunningError,
    Kubectl,
    ensure_assets,
    release,
    workloads,
)
from kokpit.local import nodes as kwok_nodes
from kokpit.runtime import ApiError
from kokpit.runtime.log import configure

NAMESPACE = demo_business.NAMESPACE
NODES = 20
REPLICAS = 60


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="walk through kokpit on the local meta-cluster")
    p.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-wait", action="store_true", help="exit at the end instead of waiting")
    p.add_argument(
        "--real-nodes",
        type=int,
        default=1,
        help="real nodes (kubelet, containerd, kube-proxy; needs root) beside the kwok ones",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cluster = cluster_of(args)
    logs = cluster.layout.root / "logs" / "operators.log"
    logs.parent.mkdir(parents=True, exist_ok=True)
    configure(stream=logs.open("a"), json=True)  # the terminal is for the story
    assets = ensure_assets(release(None), progress=_step)
    kubectl = Kubectl(assets.bin("kubectl"), cluster.kubeconfig)

    _step(
        f"1. Start the local meta-cluster (Kubernetes {assets.kubernetes_version}) "
        "from binaries built from Go modules"
    )
    owned = True
    operator: demo_business.OperatorThread | None = None
    kwok: subprocess.Popen[bytes] | None = None
    host: demo_host.DemoHost | None = None
    real = args.real_nodes > 0
    try:
        cluster.up(assets, progress=_step, real_nodes=args.real_nodes)
    except AlreadyRunningError:
        owned = False
        _step("   already running: using it, and leaving it running afterwards")
    try:
        _step(f"2. Join {NODES} simulated nodes (kwok plays their kubelets)")
        names = kwok_nodes.ensure_nodes(kubectl, NODES)
        kwok_nodes.wait_ready(kubectl, names)
        _step(f"   {len(names)} nodes Ready")

        _step(f"3. Run a {REPLICAS}-replica Deployment: the real scheduler places every pod")
        kubectl.apply(
            [workloads.namespace(NAMESPACE), workloads.deployment(NAMESPACE, "hello", REPLICAS)]
        )
        kubectl.run("rollout", "status", "-n", NAMESPACE, "deployment/hello", "--timeout=180s")
        pods = kubectl.get("pods", "-n", NAMESPACE, "-l", "app=hello")["items"]
        per_node = collections.Counter(p["spec"].get("nodeName") for p in pods)
        running = sum(p["status"].get("phase") == "Running" for p in pods)
        _step(
            f"   {running}/{len(pods)} pods Running on {len(per_node)} nodes "
            f"({min(per_node.values())}-{max(per_node.values())} per node)"
        )

        _step("4. A business cluster, kept by the Cluster-Operator (control plane as processes)")
        operator = demo_business.start_operators(cluster, kubectl, real_nodes=real)
        if real:
            demo_kube.create(kubectl)  # comes up on the real node meanwhile (step 5)
        business = demo_business.story(operator, kubectl, cluster.layout.root, _step)

        kube_on_kube: Kubectl | None = None
        if real:
            _step("5. Kube-on-kube: a business control plane as pods on the real node")
            kube_on_kube = demo_kube.story(operator, kubectl, cluster.layout.root, _step)

        _step("6. Machines join team-a as nodes, held back until their readiness gates pass")
        kwok = demo_machines.story(
            kubectl, business, assets, cluster.layout.root, demo_business.NAME, _step
        )

        if real:
            _step("7. A host joins team-a with its own kubelet")
            host = demo_host.DemoHost()
            demo_host.story(kubectl, business, assets, host, demo_business.NAME, _step)

        _step("8. Look around with kubectl:")
        print_env(cluster, assets.bin("kubectl").parent)
        print("kubectl get nodes\nkubectl get pods -n kokpit-demo -o wide")
        print("kubectl get clusters,clusterpackageversions -A; kubectl get events -n kokpit-demo")
        print("kubectl get machines,machinepackageversions -A -o wide")
        print(f"kubectl --kubeconfig {business.kubeconfig} get nodes,pods -A -o wide")
        if kube_on_kube is not None:
            print(f"kubectl --kubeconfig {kube_on_kube.kubeconfig} get ns")
        print(f"# component and operator logs: {cluster.layout.root / 'logs'}", flush=True)
        if not args.no_wait:
            _step("Press Ctrl-C to stop.")
            _wait_for_signal()
    finally:
        # A second Ctrl-C must not cut the tear-down short: a host's kubelet would outlive it.
        # (kubectl, started from here on, inherits the ignored SIGINT too.)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if operator is not None:
            also = " (the host's kubelet and containerd too)" if host is not None else ""
            _step(f"cleaning up: deleting the Machines{also} and the business clusters")
            try:
                done = demo_machines.tear_down(operator)  # the host's kubelet and containerd too
            except ApiError as e:  # what cannot be cleaned up stays visible
                _step(f"   deleting the Machines failed: {e}")
                done = False
            if not done:
                _step("   some Machines are still being deleted: kubectl get machines -A")
            if host is not None:
                host.stop()
            if kwok is not None:
                kwok.terminate()
                kwok.wait(10)
            demo_business.tear_down(operator)
        if owned:
            cluster.down()  # first: a closed terminal or pipe must not keep the cluster running
            _step(
                "stopped the local meta-cluster (its data is kept; "
                "`kokpit local down --wipe` deletes it)"
            )
    return 0


def _wait_for_signal() -> None:
    stop = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop:
        time.sleep(0.5)


def _step(message: str) -> None:
    with contextlib.suppress(OSError):  # stderr may be a pipe whose reader is gone (Ctrl-C)
        print(message, file=sys.stderr, flush=True)
