"""The cluster cache's memory per business cluster of 1,000 Nodes → ``results/clustercache.json``.

One fresh local control plane serves as the meta-cluster *and* as the business clusters' API
server: it holds N KWOK nodes (Ready, with the status KWOK writes) and K Clusters, each with its
own kubeconfig Secret (issued as the Cluster-Operator does: controlled by the Cluster, type
``kokpit.io/kubeconfig``). The cache treats each Cluster as a separate business cluster (its
own client, connection and informers, each holding its own copy of the N nodes), which is what
memory per cluster measures; only the API server is shared.

For each way of caching Nodes (``full``: whole objects minus managedFields, the default
transform; ``metadata``: metadata-only informer; ``essentials``: the Machine-Operator's
transform, name + taints + conditions), a child process runs a ClusterCache with a Node watch
over K clusters, waits until every cluster's informer holds N nodes, collects garbage and
reports the Python memory still allocated (``tracemalloc``: the stores, informers, clients and
connections that live on) and its resident memory (VmRSS, after ``malloc_trim``; it keeps the
allocator's high-water mark from decoding list pages, so it is a poor measure of what stays).
The memory per cluster is the least-squares slope over the cluster counts (at least three, so
a reader sees the cost grow linearly or not), so the interpreter and the libraries cancel out.

    python -m bench.clustercache [--nodes 1000] [--counts 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ctypes
import gc
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import machine as machine_info
from bench import plot, stats
from bench.interrupt import stop_on_sigterm
from fixtures.samples import cluster as cluster_manifest
from kokpit.api.schema import crd
from kokpit.api.v1alpha1 import CLUSTERS, KINDS
from kokpit.controllers.machine.nodewatch import node_essentials
from kokpit.local import Kubectl, LocalCluster, ensure_assets, release
from kokpit.local import nodes as kwok_nodes
from kokpit.runtime import (
    Client,
    ClientConfig,
    ClusterCache,
    ClusterCacheOptions,
    Informer,
    Request,
    Scope,
)
from kokpit.runtime.resources import NODES

NS = "bench-clustercache"
INDEX = "bench.kokpit.io/index"
MODES = ("full", "metadata", "essentials")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def admin_secret(cluster: dict[str, Any]) -> str | None:
    return ((cluster.get("status") or {}).get("adminKubeconfigSecretRef") or {}).get("name")


async def child(kubeconfig: Path, mode: str, clusters: int, nodes: int) -> dict[str, Any]:
    """Run the cache over ``clusters`` Clusters until every Node informer is full."""
    tracemalloc.start()
    config = ClientConfig.from_kubeconfig(kubeconfig, qps=1000, burst=2000)
    async with Client(config) as client:
        # Only the first K Clusters: a watch connects every Cluster its informer lists.
        selector = f"{INDEX} in ({','.join(str(i) for i in range(clusters))})"
        informer = Informer(client, Scope(CLUSTERS, namespace=NS, label_selector=selector))
        cache = ClusterCache(
            client, informer, ClusterCacheOptions(secret_name=admin_secret, qps=1000, burst=2000)
        )
        ways: dict[str, dict[str, Any]] = {
            "full": {},
            "metadata": {"metadata_only": True},
            "essentials": {"transform": node_essentials},
        }
        kwargs = ways[mode]

        def mapper(cluster_key: str, obj: dict[str, Any]) -> list[Request]:
            return []

        cache.watch(NODES, mapper, **kwargs)
        tasks = [asyncio.create_task(informer.start()), asyncio.create_task(cache.start())]
        await informer.synced.wait()
        keys = [f"{NS}/c{i}" for i in range(clusters)]
        started = time.monotonic()
        while True:
            counts = []
            for key in keys:
                try:
                    accessor = await cache.get(key)
                except Exception:
                    counts.append(0)
                    continue
                counts.append(len(accessor.informer(NODES, **kwargs).store))
            if all(c >= nodes for c in counts):
                break
            if time.monotonic() - started > 300:
                raise TimeoutError(f"informers not full: {counts}")
            await asyncio.sleep(0.5)
        synced_s = time.monotonic() - started
        await asyncio.sleep(2)  # let the watches settle
        gc.collect()
        live, _ = tracemalloc.get_traced_memory()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        result = {
            "mode": mode,
            "clusters": clusters,
            "live_mib": round(live / 2**20, 2),
            "rss_mib": round(rss_mib(), 1),
            "synced_s": round(synced_s, 2),
        }
        for t in reversed(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return result


def setup_clusters(kubectl: Kubectl, kubeconfig: str, count: int) -> None:
    kubectl.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
    for i in range(count):
        name = f"c{i}"
        manifest = cluster_manifest(NS, name, "none", "process")
        manifest["metadata"]["labels"] = {INDEX: str(i)}
        kubectl.apply([manifest])
        created = json.loads(kubectl.run("get", "cluster", "-n", NS, name, "-o", "json"))
        status = {"status": {"adminKubeconfigSecretRef": {"name": f"{name}-admin-kubeconfig"}}}
        kubectl.run(
            *("patch", "cluster", "-n", NS, name, "--subresource=status", "--type=merge"),
            f"--patch={json.dumps(status)}",
        )
        meta = created["metadata"]
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kokpit.io/kubeconfig",
            "metadata": {
                "name": f"{name}-admin-kubeconfig",
                "namespace": NS,
                "labels": {"kokpit.io/cluster": name},
                "ownerReferences": [
                    {
                        "apiVersion": "kokpit.io/v1alpha1",
                        "kind": "Cluster",
                        "name": name,
                        "uid": meta["uid"],
                        "controller": True,
                    }
                ],
            },
            "data": {"value": base64.b64encode(kubeconfig.encode()).decode()},
        }
        kubectl.apply([secret])


def measure(kubeconfig: Path, mode: str, clusters: int, nodes: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "bench.clustercache", "--child", mode),
            *("--clusters", str(clusters), "--nodes", str(nodes)),
            *("--kubeconfig", str(kubeconfig)),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {result}", flush=True)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = [int(c) for c in args.counts.split(",")]
    assets = ensure_assets(release(None))
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-clustercache-") as tmp:
        cluster = LocalCluster(Path(tmp))
        cluster.up(assets, progress=lambda _: None)
        try:
            kubectl = Kubectl(assets.bin("kubectl"), cluster.kubeconfig)
            kubectl.apply([crd(k) for k in KINDS])
            kubectl.wait_established(*(f"{k.plural}.{k.group}" for k in KINDS))
            started = time.monotonic()
            names = kwok_nodes.ensure_nodes(kubectl, args.nodes, prefix="bench")
            kwok_nodes.wait_ready(kubectl, names, timeout_s=600)
            print(f"{args.nodes} KWOK nodes Ready in {time.monotonic() - started:.0f} s")
            setup_clusters(kubectl, cluster.kubeconfig.read_text(), max(counts))
            samples = [
                measure(cluster.kubeconfig, mode, k, args.nodes) for mode in MODES for k in counts
            ]
        finally:
            cluster.down()
    per_cluster = {
        mode: stats.slope([(s["clusters"], s["live_mib"]) for s in samples if s["mode"] == mode])
        for mode in MODES
    }
    return {
        "nodes_per_cluster": args.nodes,
        "cluster_counts": counts,
        "what": (
            "Python memory still allocated (tracemalloc, after gc) in a process running a "
            "ClusterCache with a Node watch over K business clusters (each its own client, "
            "connection and Node informer; all served by one API server holding the nodes), "
            "once every informer holds all nodes; per-cluster = least-squares slope over the "
            "counts; "
            "rss_mib (VmRSS after malloc_trim) is recorded per sample for reference"
        ),
        "mib_per_cluster": per_cluster,
        "samples": samples,
        "kubernetes": assets.kubernetes_version,
        "versions": {p: version(p) for p in ("aiohttp", "orjson")},
    }


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--counts", default="1,2,4", help="cluster counts, for the slope")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--clusters", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", type=Path, help=argparse.SUPPRESS)
    args = machine_info.parse_args(parser, quick={"nodes": 100})
    if args.child:
        result = asyncio.run(child(args.kubeconfig, args.child, args.clusters, args.nodes))
        print(json.dumps(result), flush=True)
        return
    result = run(args)
    path = machine_info.write("clustercache", result, quick=args.quick)
    plot.clustercache(result, path.parent / "plots")
    print(json.dumps(result["mib_per_cluster"]), f"→ {path}")


if __name__ == "__main__":
    main()
