"""The Cluster-Operator at scale → ``bench/results/cluster.json``.

On a fresh local meta-cluster with kwok nodes, the operator runs as its own process
(``kokpit operator cluster``), and the benchmark records:

- clusters with the ``kubernetes`` runtime, grown through several counts (100, 300, 500):
  per step the time until the added ones are Ready, the operator's CPU per added cluster, its
  idle CPU and resident memory; memory per cluster is the slope between the first and the
  last count. (Anchor published by Kamaji: 100 hosted control planes in about 7.5 minutes at
  about 12 mCPU and 6 MiB of operator per control plane.)
- one ``process``-runtime cluster (real components): the time to create it, and the time of
  each step of an upgrade v1.35.4 → v1.36.3 and of a failed upgrade that rolls back.

    python -m bench.cluster [--counts 100,300,500] [--nodes N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import machine
from bench.interrupt import stop_on_sigterm
from fixtures.samples import cluster
from kokpit.api.schema import crd
from kokpit.api.v1alpha1 import CLUSTER_PACKAGE_VERSIONS as PACKAGE_VERSIONS
from kokpit.api.v1alpha1 import CLUSTERS, KINDS
from kokpit.local import Kubectl, LocalCluster, ensure_assets, release
from kokpit.local import nodes as kwok_nodes
from kokpit.local.versions import RELEASES
from kokpit.local.workloads import namespace
from kokpit.providers.controlplane.releases import cluster_package
from kokpit.runtime import Client, ClientConfig

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
}


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
    first, last = points[0], points[-1]
    span = last["clusters"] - first["clusters"]
    return {
        "nodes": args.nodes,
        "workers": args.workers,
        "steps": points,
        "operator_rss_mib_per_cluster": (
            round((last["operator_rss_mib"] - first["operator_rss_mib"]) / span, 3)
            if span
            else None
        ),
        "operator_idle_mcpu_per_cluster": round(last["operator_idle_mcpu"] / last["clusters"], 3),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    new, old = RELEASES[0], RELEASES[1]
    assets = ensure_assets(release(None))
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
                scale = await grow(client, operator.pid, args.counts, args)
                print(scale, flush=True)

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
                "create": create_steps,
                "upgrade": upgrade_steps,
                "failed_upgrade_and_rollback": rollback_steps,
            }
            print(process_runtime, flush=True)
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(30)
            meta.down()
    return {
        "kubernetes": assets.kubernetes_version,
        "meaning": MEANING,
        "kubernetes_runtime_at_scale": scale,
        "process_runtime_step_seconds": process_runtime,
        "anchor": "Kamaji: 100 hosted control planes in ~7.5 min, ~12 mCPU and ~6 MiB of "
        "operator per control plane (published figures, not measured here)",
    }


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--counts",
        type=machine.ints,
        default=[100, 300, 500],
        help="cluster counts to grow through",
    )
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=1800)
    args = machine.parse_args(
        parser, quick={"counts": [5, 10, 20], "nodes": 10, "settle": 2.0, "idle": 5.0}
    )
    result = asyncio.run(run(args))
    print(f"wrote {machine.write('cluster', result, quick=args.quick)}")


if __name__ == "__main__":
    main()
