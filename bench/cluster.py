"""The Cluster-Operator at scale → ``bench/results/cluster.json``.

On a fresh local meta-cluster with kwok nodes, the operator runs as its own process
(``kokpit operator cluster``), and the benchmark records:

- clusters with the ``kubernetes`` runtime, grown through several counts (100, 300, 500):
  per step the time until the added ones are Ready, the operator's CPU per added cluster, its
  idle CPU and resident memory; memory per cluster is the slope between the first and the
  last count. (Anchor published by Kamaji: 100 hosted control planes in about 7.5 minutes at
  about 12 mCPU and 6 MiB of operator per control plane.)
- one ``process``-runtime cluster (real components): the time to create it, and the time of
  each step of an upgrade v1.35.4 → v1.36.3 and of a failed upgrade that rolls back;
- clusters with the ``kubernetes`` runtime **really running** on a meta-cluster of its own
  with one real node (kubelet, containerd, kube-proxy), grown through 1, 5 and 10: per step
  the time from create to Ready of each added cluster, and after a settle period each control
  plane's resident memory and idle CPU (etcd + kube-apiserver + controller-manager +
  scheduler, from ``/proc``: :mod:`bench.pods`) next to the operator's own, so that Kamaji's
  published operator-only figures are compared with the operator alone.

Each section is written into the result with its own run (commit, date), keeping the others
(``--sections``): the real-node one starts a real kubelet, so it runs alone on the machine,
apart from the hours of the KWOK scale run.

    python -m bench.cluster [--sections scale,process,real] [--counts 100,300,500]
                            [--real-counts 1,5,10] [--nodes N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import machine, plot, pods, stats
from bench.interrupt import stop_on_sigterm
from fixtures.samples import cluster
from kokpit.api.schema import crd
from kokpit.api.v1alpha1 import CLUSTER_PACKAGE_VERSIONS as PACKAGE_VERSIONS
from kokpit.api.v1alpha1 import CLUSTERS, KINDS
from kokpit.local import Kubectl, LocalCluster, ensure_assets, realnode, release
from kokpit.local import nodes as kwok_nodes
from kokpit.local.component_images import REPOSITORY
from kokpit.local.versions import RELEASES
from kokpit.local.workloads import namespace
from kokpit.providers.controlplane import ORDER
from kokpit.providers.controlplane.releases import cluster_package
from kokpit.runtime import Client, ClientConfig
from kokpit.runtime.resources import PODS

CLK_TCK = os.sysconf("SC_CLK_TCK")
NS = "bench"
#: What "Ready" means in each section of the result (recorded with it; the docs quote it).
MEANING = {
    "kubernetes_runtime_at_scale": "Ready: the Cluster-Operator applied every component's "
    "workload and each reports all replicas updated and ready. The pods land on KWOK nodes, "
    "which run no containers and mark pods ready: this measures the operator and the API "
    "server, not the control planes (no etcd, kube-apiserver, ... runs).",
    "process_runtime_step_seconds": "Ready: real etcd, kube-apiserver, controller-manager and "
    "scheduler processes started by the operator pass their health checks.",
    "kubernetes_runtime_on_real_node": "Ready: the Cluster-Operator (kubernetes runtime only, "
    "its own process on the host) applied every component's workload and each reports all "
    "replicas ready: real pods on the meta-cluster's one real node (kubelet, containerd, "
    "kube-proxy on this host), 1 etcd member (emptyDir) and 1 replica of kube-apiserver, "
    "controller-manager and scheduler per cluster, each passing its real readiness probe. "
    "Ready seconds: from each cluster's create to the first poll (every second) that sees it "
    "Ready; the clusters of a step are created together. Memory: VmRSS summed over the "
    "processes of a cluster's four containers (the pods' cgroups on this host; the sandboxes' "
    "pause and the containerd shims excluded and reported apart, per pod), after a settle "
    "period; CPU: their CPU ticks over the idle interval, in mCPU. The operator's figures are "
    "its process's, over the same interval.",
}
#: The real-node section's label of a cluster's pods (set by the kubernetes runtime).
CLUSTER_LABEL = "kokpit.io/cluster"
COMPONENT_LABEL = "kokpit.io/component"
#: Kamaji's published figures: its operator's, per hosted control plane (not measured here).
KAMAJI = {"operator_rss_mib_per_control_plane": 6, "operator_mcpu_per_control_plane": 12}
ANCHOR = (
    "Kamaji: 100 hosted control planes in ~7.5 min, ~12 mCPU and ~6 MiB of operator per "
    "control plane (published figures, not measured here)"
)


def proc_stats(pid: int) -> tuple[float, float, float]:
    """CPU seconds, current and peak RSS (MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return cpu, int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def ready(obj: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in obj.get("status", {}).get("conditions", [])
    )


async def wait_all_ready(client: Client, count: int, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        items = (await client.list(CLUSTERS, namespace=NS, limit=1000)).items
        if sum(ready(c) for c in items) >= count:
            return time.monotonic() - started
        await asyncio.sleep(2)
    raise TimeoutError(f"not all {count} clusters Ready within {limit:.0f} s")


async def steps(client: Client, name: str, done: Any, limit: float = 600) -> dict[str, float]:
    """Seconds each control-plane step took, watching status.step, until ``done(obj)``."""
    out: dict[str, float] = {}
    current, since = None, time.monotonic()
    started = since
    while time.monotonic() - started < limit:
        obj = await client.get(CLUSTERS, name, namespace=NS)
        step = obj.get("status", {}).get("step") or {}
        label = (
            f"{step.get('component')} {step.get('version')} ({step.get('packageVersion')})"
            if step
            else None
        )
        if label != current:
            if current is not None:
                out[current] = round(time.monotonic() - since, 2)
            current, since = label, time.monotonic()
        if done(obj):
            out["total"] = round(time.monotonic() - started, 2)
            return out
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{name} did not finish: {obj.get('status')}")


async def grow(
    client: Client, operator: int, counts: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Create clusters in steps up to each of ``counts``; per step the time until all are
    Ready and the operator's cost; memory per cluster is the slope between the first and the
    last count (what one more cluster costs, without the operator's fixed base)."""
    new = RELEASES[0]
    gate = asyncio.Semaphore(32)

    async def create(i: int) -> None:
        async with gate:
            await client.create(
                CLUSTERS, cluster(NS, f"c{i:04d}", f"k8s-{new.version}", "kubernetes")
            )

    points: list[dict[str, Any]] = []
    made = 0
    for count in counts:
        cpu0, _, _ = proc_stats(operator)
        started = time.monotonic()
        await asyncio.gather(*(create(i) for i in range(made, count)))
        created = time.monotonic() - started
        all_ready = await wait_all_ready(client, count, args.timeout) + created
        cpu1, _, _ = proc_stats(operator)
        await asyncio.sleep(args.settle)
        idle0, idle_started = proc_stats(operator)[0], time.monotonic()
        await asyncio.sleep(args.idle)
        idle1, rss, peak = proc_stats(operator)
        added = count - made
        points.append(
            {
                "clusters": count,
                "added": added,
                "create_seconds": round(created, 1),
                "added_ready_seconds": round(all_ready, 1),
                "operator_cpu_seconds_per_added_cluster": round((cpu1 - cpu0) / added, 3),
                "operator_idle_mcpu": round(
                    1000 * (idle1 - idle0) / (time.monotonic() - idle_started), 1
                ),
                "operator_rss_mib": round(rss, 1),
                "operator_peak_rss_mib": round(peak, 1),
            }
        )
        print(points[-1], flush=True)
        made = count
    last = points[-1]
    return {
        "nodes": args.nodes,
        "workers": args.workers,
        "steps": points,
        "operator_rss_mib_per_cluster": stats.slope(
            [(p["clusters"], p["operator_rss_mib"]) for p in points]
        ),
        "operator_idle_mcpu_per_cluster": round(last["operator_idle_mcpu"] / last["clusters"], 3),
    }


async def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The sections ``scale`` and ``process`` (those of ``args.sections``), on one meta-cluster
    with KWOK nodes only."""
    new, old = RELEASES[0], RELEASES[1]
    assets = ensure_assets(release(None))
    kube = assets.kubernetes_version
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-cluster-") as tmp:
        meta = LocalCluster(Path(tmp) / "meta")
        meta.up(assets, progress=lambda _: None)
        operator = None
        try:
            kubectl = Kubectl(assets.bin("kubectl"), meta.kubeconfig)
            names = kwok_nodes.ensure_nodes(kubectl, args.nodes)
            kwok_nodes.wait_ready(kubectl, names)
            kubectl.apply([crd(k) for k in KINDS] + [namespace(NS)])
            kubectl.wait_established(*(f"{k.plural}.{k.group}" for k in KINDS))
            log = (Path(tmp) / "operator.log").open("w")
            operator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kokpit",
                    "operator",
                    "cluster",
                    "--kubeconfig",
                    str(meta.kubeconfig),
                    "--runtimes",
                    "kubernetes,process",
                    "--process-root",
                    str(Path(tmp) / "cp"),
                    "--health-port",
                    "0",
                    "--workers",
                    str(args.workers),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            config = ClientConfig.from_kubeconfig(meta.kubeconfig, qps=2000, burst=4000)
            async with Client(config) as client:
                for pv in (
                    cluster_package(f"k8s-{new.version}", new, deadline_seconds=30),
                    cluster_package(f"k8s-{old.version}", old, deadline_seconds=30),
                ):
                    await client.apply(PACKAGE_VERSIONS, pv, field_manager="bench")
                await asyncio.sleep(3)  # the operator is up and synced
                if "scale" in args.sections:
                    scale = await grow(client, operator.pid, args.counts, args)
                    out["kubernetes_runtime_at_scale"] = {"kubernetes": kube, **scale}
                    print(scale, flush=True)
                if "process" not in args.sections:
                    return out

                # One real control plane: create, a failed upgrade that rolls back, an upgrade.
                await client.create(CLUSTERS, cluster(NS, "real", f"k8s-{old.version}", "process"))
                create_steps = await steps(client, "real", ready)
                broken = cluster_package(
                    "broken", new, deadline_seconds=15, apiserver_flags={"no-such-flag": "x"}
                )
                await client.create(PACKAGE_VERSIONS, broken)
                await client.patch(
                    CLUSTERS, "real", {"spec": {"packageVersion": "broken"}}, namespace=NS
                )
                rollback_steps = await steps(
                    client,
                    "real",
                    lambda o: ready(o) and o["status"].get("failedPackageVersion") == "broken",
                )
                await client.patch(
                    CLUSTERS,
                    "real",
                    {"spec": {"packageVersion": f"k8s-{new.version}"}},
                    namespace=NS,
                )
                upgrade_steps = await steps(
                    client,
                    "real",
                    lambda o: ready(o) and o["status"].get("kubernetesVersion") == new.version,
                )
                await client.delete(CLUSTERS, "real", namespace=NS)
                await asyncio.sleep(5)
            process_runtime = {
                "kubernetes": kube,
                "create": create_steps,
                "upgrade": upgrade_steps,
                "failed_upgrade_and_rollback": rollback_steps,
            }
            print(process_runtime, flush=True)
            out["process_runtime_step_seconds"] = process_runtime
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(30)
            meta.down()
    return out


async def wait_each_ready(
    client: Client, created: dict[str, float], limit: float
) -> dict[str, float]:
    """Seconds from each cluster's create (``created``: monotonic times) to the first poll that
    sees it Ready; polls every second."""
    seen: dict[str, float] = {}
    started = time.monotonic()
    while len(seen) < len(created):
        if time.monotonic() - started > limit:
            late = sorted(set(created) - set(seen))
            raise TimeoutError(f"not Ready within {limit:.0f} s: {', '.join(late)}")
        now = time.monotonic()
        for obj in (await client.list(CLUSTERS, namespace=NS)).items:
            name = obj["metadata"]["name"]
            if name in created and name not in seen and ready(obj):
                seen[name] = now - created[name]
        await asyncio.sleep(1)
    return seen


async def control_planes(
    client: Client, operator: int, interval: float, socket: Path
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per cluster, its control plane's resident memory (MiB) and CPU (mCPU over ``interval``)
    with each component's share; and the same of the operator, the shims and the sandboxes
    (:mod:`bench.pods`). A component whose pod runs no process here is an error: every
    figure must cover all four."""
    listed = (await client.list(PODS, namespace=NS, label_selector=CLUSTER_LABEL)).items
    owner = {
        p["metadata"]["uid"]: (p["metadata"]["labels"][CLUSTER_LABEL], p["metadata"]["labels"])
        for p in listed
        if not p["metadata"].get("deletionTimestamp")
    }
    cpu0, op_cpu0 = pods.sample(socket), proc_stats(operator)[0]
    started = time.monotonic()
    await asyncio.sleep(interval)
    after, (op_cpu1, op_rss, _) = pods.sample(socket), proc_stats(operator)
    elapsed = time.monotonic() - started
    planes: dict[str, dict[str, float]] = {}
    for uid, (name, labels) in owner.items():
        if uid not in after.rss_mib or uid not in cpu0.cpu_seconds:
            raise RuntimeError(f"no process of {name}'s {labels.get(COMPONENT_LABEL)} on this host")
        plane = planes.setdefault(name, {"rss_mib": 0.0, "mcpu": 0.0})
        mcpu = 1000 * (after.cpu_seconds[uid] - cpu0.cpu_seconds[uid]) / elapsed
        plane["rss_mib"] += after.rss_mib[uid]
        plane["mcpu"] += mcpu
        component = labels.get(COMPONENT_LABEL, "?")
        plane[f"{component}_rss_mib"] = plane.get(f"{component}_rss_mib", 0.0) + after.rss_mib[uid]
        plane[f"{component}_mcpu"] = plane.get(f"{component}_mcpu", 0.0) + mcpu
    others = {
        "operator_rss_mib": round(op_rss, 1),
        "operator_idle_mcpu": round(1000 * (op_cpu1 - op_cpu0) / elapsed, 1),
        # Per pod of the node (CoreDNS's included): one shim and one sandbox each.
        "shim_rss_mib_per_pod": round(statistics.median(after.shim_rss_mib or [0.0]), 1),
        "pause_rss_mib_per_pod": round(
            statistics.median([after.pause_rss_mib.get(uid, 0.0) for uid in owner] or [0.0]), 1
        ),
    }
    return planes, others


async def grow_real(
    client: Client, operator: int, socket: Path, counts: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Real control planes on the real node, in steps up to each of ``counts``: per step each
    added cluster's seconds to Ready, then (after ``args.real_settle``) every control plane's
    memory and idle CPU, and the operator's; the operator's cost per cluster is the slope
    between the first and the last count, as in :func:`grow`."""
    new = RELEASES[0]
    spec = {"etcdReplicas": 1, "replicas": 1}

    async def create(name: str, created: dict[str, float]) -> None:
        sample = cluster(NS, name, f"k8s-{new.version}", "kubernetes", controlPlane=spec)
        started = time.monotonic()
        await client.create(CLUSTERS, sample)
        created[name] = started

    points: list[dict[str, Any]] = []
    made = 0
    for count in counts:
        created: dict[str, float] = {}
        op_cpu0 = proc_stats(operator)[0]
        await asyncio.gather(*(create(f"r{i:02d}", created) for i in range(made, count)))
        to_ready = await wait_each_ready(client, created, args.timeout)
        op_cpu1 = proc_stats(operator)[0]
        await asyncio.sleep(args.real_settle)
        planes, others = await control_planes(client, operator, args.idle, socket)
        restarts = sum(
            c.get("restartCount", 0)
            for p in (await client.list(PODS, namespace=NS, label_selector=CLUSTER_LABEL)).items
            for c in p.get("status", {}).get("containerStatuses", [])
        )
        added = count - made
        point: dict[str, Any] = {
            "clusters": count,
            "added": added,
            "added_seconds_to_ready": stats.spread(list(to_ready.values())),
            "control_plane_rss_mib": stats.spread([p["rss_mib"] for p in planes.values()]),
            "control_plane_idle_mcpu": stats.spread([p["mcpu"] for p in planes.values()]),
            "component_rss_mib_median": {
                c: round(statistics.median(p[f"{c}_rss_mib"] for p in planes.values()), 1)
                for c in ORDER
            },
            "component_idle_mcpu_median": {
                c: round(statistics.median(p[f"{c}_mcpu"] for p in planes.values()), 1)
                for c in ORDER
            },
            "control_planes_rss_mib_total": round(sum(p["rss_mib"] for p in planes.values()), 1),
            "operator_cpu_seconds_per_added_cluster": round((op_cpu1 - op_cpu0) / added, 3),
            **others,
            "container_restarts": restarts,
        }
        points.append(point)
        print(point, flush=True)
        made = count
    last = points[-1]

    def slope(key: str) -> float | None:
        return stats.slope([(p["clusters"], p[key]) for p in points])

    operator_rss, operator_mcpu = slope("operator_rss_mib"), slope("operator_idle_mcpu")
    plane = {
        "rss_mib": last["control_plane_rss_mib"]["median"],
        "idle_mcpu": last["control_plane_idle_mcpu"]["median"],
    }
    return {
        "node": realnode.node_name(0),
        "etcd_members_per_cluster": 1,
        "settle_seconds": args.real_settle,
        "idle_interval_seconds": args.idle,
        "steps": points,
        "operator_rss_mib_per_cluster": operator_rss,
        "operator_idle_mcpu_per_cluster": operator_mcpu,
        "comparison": {
            # Published as "mCPU" per control plane: whether busy or idle, it does not say.
            "kamaji_published_operator_per_control_plane": {
                "rss_mib": KAMAJI["operator_rss_mib_per_control_plane"],
                "mcpu": KAMAJI["operator_mcpu_per_control_plane"],
            },
            "kokpit_operator_per_cluster": {"rss_mib": operator_rss, "idle_mcpu": operator_mcpu},
            "kokpit_control_plane_per_cluster": plane,
            "note": "Kamaji's figures are its operator's alone, per hosted control plane, on "
            "its hardware (busy or idle, not said); its control planes' own memory and CPU come "
            "on top and are not in them. Compare kamaji_published_operator_per_control_plane with "
            "kokpit_operator_per_cluster (the slope of the operator between the first and the "
            f"last count); kokpit_control_plane_per_cluster (median at {last['clusters']}) is "
            "what each real control plane (etcd + kube-apiserver + controller-manager + "
            "scheduler) costs besides, whichever operator manages it.",
        },
    }


async def run_real(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The section ``real``: a meta-cluster of its own with one real node, the operator with
    the kubernetes runtime placing control planes on it (the flags the kube-on-kube e2e test
    uses), grown through ``args.real_counts``."""
    assets = ensure_assets(release(None))
    # Short: the real node's kubelet makes unix sockets below the data directory.
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-", dir="/tmp") as tmp:
        meta = LocalCluster(Path(tmp) / "meta")
        meta.up(assets, progress=lambda _: None, real_nodes=1)
        operator = None
        try:
            kubectl = Kubectl(assets.bin("kubectl"), meta.kubeconfig)
            kubectl.apply([crd(k) for k in KINDS] + [namespace(NS)])
            kubectl.wait_established(*(f"{k.plural}.{k.group}" for k in KINDS))
            log = (Path(tmp) / "operator.log").open("w")
            operator = subprocess.Popen(
                [
                    *(sys.executable, "-m", "kokpit", "operator", "cluster"),
                    *("--kubeconfig", str(meta.kubeconfig)),
                    *("--runtimes", "kubernetes"),
                    *("--control-plane-node-selector", f"{realnode.LABEL}=true"),
                    *("--image-repository", REPOSITORY),
                    *("--health-port", "0"),
                    *("--workers", str(args.workers)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            config = ClientConfig.from_kubeconfig(meta.kubeconfig)
            async with Client(config) as client:
                new = RELEASES[0]
                await client.apply(
                    PACKAGE_VERSIONS,
                    cluster_package(f"k8s-{new.version}", new, deadline_seconds=600),
                    field_manager="bench",
                )
                await asyncio.sleep(3)  # the operator is up and synced
                socket = realnode.NodePaths(meta.layout.root / realnode.NODES_DIR / "0").socket
                real = await grow_real(client, operator.pid, socket, args.real_counts, args)
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(30)
            meta.down()
    return {"kubernetes_runtime_on_real_node": {"kubernetes": assets.kubernetes_version, **real}}


SECTIONS = {
    "scale": "kubernetes_runtime_at_scale",
    "process": "process_runtime_step_seconds",
    "real": "kubernetes_runtime_on_real_node",
}


def sections(text: str) -> set[str]:
    chosen = set(text.split(","))
    if unknown := chosen - set(SECTIONS):
        raise argparse.ArgumentTypeError(f"unknown sections {sorted(unknown)}: not in {SECTIONS}")
    return chosen


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--sections",
        type=sections,
        default=set(SECTIONS),
        help="which to run, comma-separated: scale (KWOK), process, real (a real node: "
        "exclusive on the machine); the others already in the result are kept",
    )
    parser.add_argument(
        "--counts",
        type=machine.ints,
        default=[100, 300, 500],
        help="cluster counts to grow through",
    )
    parser.add_argument(
        "--real-counts",
        type=machine.ints,
        default=[1, 5, 10],
        help="real control planes to grow through on the real node",
    )
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument(
        "--real-settle",
        type=float,
        default=60.0,
        help="seconds after the last Ready before real control planes are measured",
    )
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=1800)
    args = machine.parse_args(
        parser,
        quick={
            "counts": [5, 10, 20],
            "real_counts": [1, 2],
            "nodes": 10,
            "settle": 2.0,
            "real_settle": 10.0,
            "idle": 5.0,
        },
    )
    result: dict[str, dict[str, Any]] = {}
    if args.sections & {"scale", "process"}:
        result.update(asyncio.run(run(args)))
    if "real" in args.sections:
        result.update(asyncio.run(run_real(args)))
    path = machine.write_sections(
        "cluster",
        result,
        known=SECTIONS.values(),
        common={"meaning": MEANING, "anchor": ANCHOR},
        quick=args.quick,
    )
    plot.cluster(json.loads(path.read_text()), path.parent / "plots")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
