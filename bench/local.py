"""Benchmark of the local meta-cluster → ``bench/results/local.json``.

Records, for the record and never as a pass/fail:

- the cold build time of each Kubernetes version, as measured by the build itself and kept in
  the cache manifest (``go_build_cache: cold`` says the Go build cache was empty);
- warm ``up`` time to ready: with binaries cached, from nothing to every component healthy, on
  a fresh data directory and again on a restart of the same one;
- resident memory of each component while idle, as KWOK nodes are added (500, 1,000, 2,000),
  and how long the added nodes took to become Ready.

Run with ``make bench`` or ``python -m bench.local [--nodes 500,1000,2000] [--idle S]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import machine, plot
from bench.interrupt import stop_on_sigterm
from kokpit.local import RELEASES, Assets, Kubectl, LocalCluster, ensure_assets, release
from kokpit.local import nodes as kwok_nodes
from kokpit.local.assets import read_manifest, release_dir

BUILD_FIELDS = ("build_seconds", "go_build_cache", "step_seconds", "etcd", "kwok", "go", "built_at")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def builds() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in RELEASES:
        try:
            m = read_manifest(release_dir(r))
        except FileNotFoundError:
            out[r.version] = "not built"
            continue
        out[r.version] = {k: m.get(k) for k in BUILD_FIELDS}
    return out


def timed_up(cluster: LocalCluster, assets: Assets) -> float:
    started = time.monotonic()
    cluster.up(assets, progress=lambda _: None)
    return round(time.monotonic() - started, 2)


def grow_nodes(cluster: LocalCluster, kubectl: Kubectl, count: int, idle: float) -> dict[str, Any]:
    """Add KWOK nodes up to ``count``, wait until they are Ready, idle, and read each
    component's memory."""
    started = time.monotonic()
    names = kwok_nodes.ensure_nodes(kubectl, count)
    created = time.monotonic() - started
    kwok_nodes.wait_ready(kubectl, names, timeout_s=900)
    ready = time.monotonic() - started
    print(f"{count} nodes: created {created:.1f} s, Ready {ready:.1f} s", flush=True)
    time.sleep(idle)
    step = {
        "nodes": count,
        "create_seconds": round(created, 1),
        "all_ready_seconds": round(ready, 1),
        "idle_seconds_before_measuring": idle,
        "rss_mib": {c.name: rss_mib(c.pid) for c in cluster.status().components if c.pid},
    }
    print(step["rss_mib"], flush=True)
    return step


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--nodes", type=machine.ints, default=[500, 1000, 2000], help="KWOK node counts"
    )
    parser.add_argument("--idle", type=float, default=60.0, help="idle seconds before measuring")
    parser.add_argument("--runs", type=int, default=3, help="fresh ups to time")
    args = machine.parse_args(parser, quick={"nodes": [50, 100, 200], "idle": 5.0, "runs": 1})

    assets = ensure_assets(release(None))
    result: dict[str, Any] = {"kubernetes": assets.kubernetes_version, "builds": builds()}
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-") as tmp:
        fresh = []
        for i in range(args.runs):
            cluster = LocalCluster(Path(tmp) / f"fresh-{i}")
            fresh.append(timed_up(cluster, assets))
            cluster.down(wipe=True)
        cluster = LocalCluster(Path(tmp) / "scale")
        timed_up(cluster, assets)
        cluster.down()
        restart = timed_up(cluster, assets)
        result["up_seconds"] = {
            "fresh_data_dir": fresh,
            "fresh_median": statistics.median(fresh),
            "restart_existing_data_dir": restart,
        }
        print(f"up: fresh {fresh} s, restart {restart} s", flush=True)
        try:
            kubectl = Kubectl(assets.bin("kubectl"), cluster.kubeconfig)
            result["idle_with_nodes"] = [
                grow_nodes(cluster, kubectl, count, args.idle) for count in args.nodes
            ]
        finally:
            cluster.down()
    path = machine.write("local", result, quick=args.quick)
    plot.local(result, path.parent / "plots")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
