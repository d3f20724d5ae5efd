"""The Machine-Operator at scale → ``bench/results/machine.json``.

A fresh local meta-cluster holds N Machines (``sim`` executor, three packages, one readiness
gate); they join a business cluster (real control plane, ``process`` runtime) whose N nodes
KWOK plays. The operator runs as its own process (``kokpit operator machine``); this script
plays the network operator that reports each node's gate in its Condition ConfigMap.

Recorded: time until every Machine is Ready; API requests per Machine (the operator's own
``rest_client_requests_total``, meta-cluster and business cluster); the operator's resident
memory and CPU; and, with all N in place, the latency from a Condition ConfigMap write to the
node's schedulability change (the not-ready taint added or removed), p50 and p99.

    python -m bench.machines [--machines N] [--samples N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import machine as machine_info
from bench.cluster import proc_stats, ready
from bench.interrupt import stop_on_sigterm
from fixtures.business import business_cluster
from kokpit.api.schema import crd
from kokpit.api.v1alpha1 import KINDS, MACHINES
from kokpit.api.v1alpha1 import MACHINE_PACKAGE_VERSIONS as PACKAGE_VERSIONS
from kokpit.local import Kubectl, LocalCluster, ensure_assets, release
from kokpit.local.nodes import free_port
from kokpit.local.workloads import namespace
from kokpit.runtime import Client, ClientConfig
from kokpit.runtime.resources import CONFIGMAPS, NODES

NS = "fleet"
GATE = "example.com/NetworkReady"
#: The ServiceAccount that owns the gate (the bench writes its key as admin, without the
#: admission policy of config/admission, which is not what is measured).
REPORTER = {"namespace": NS, "name": "network-operator"}


def package(name: str, kind: str, version: str) -> dict[str, Any]:
    script = {"check": {"run": "true"}, "install": {"run": "true"}, "remove": {"run": "true"}}
    return {"name": name, "kind": kind, "version": version, "install": {"script": script}}


def machine(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": f"m{i:05d}", "namespace": NS},
        "spec": {
            "clusterRef": {"name": "biz"},
            "executor": "sim",
            "address": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            "packageVersion": "bench-v1",
            "readinessGates": [{"conditionType": GATE, "reporter": REPORTER}],
        },
    }


def gate(status: str) -> dict[str, str]:
    report = {"type": GATE, "status": status, "reason": "Bench", "message": ""}
    return {f"{REPORTER['namespace']}.{REPORTER['name']}": json.dumps([report])}


def tainted(node: dict[str, Any]) -> bool:
    return any(t["key"] == "kokpit.io/not-ready" for t in node["spec"].get("taints") or [])


def requests_made(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("rest_client_requests_total{")
    )


async def report_gates(meta: Client, count: int) -> None:
    """The network operator: report the gate True as each ConfigMap appears (one watch)."""
    selector = "kokpit.io/node-conditions=true"
    version = (await meta.list(CONFIGMAPS, namespace=NS, label_selector=selector)).resource_version
    reported: set[str] = set()
    sem = asyncio.Semaphore(32)
    tasks: set[asyncio.Task[None]] = set()

    async def one(name: str) -> None:
        async with sem:
            await meta.patch(CONFIGMAPS, name, {"data": gate("True")}, namespace=NS)

    while len(reported) < count:
        async for event in meta.watch(
            CONFIGMAPS, namespace=NS, label_selector=selector, resource_version=version
        ):
            version = event.object["metadata"]["resourceVersion"]
            name = event.object["metadata"].get("name")
            if event.type == "ADDED" and name not in reported:
                reported.add(name)
                task = asyncio.create_task(one(name))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)


async def wait_ready(meta: Client, count: int, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        items = (await meta.list(MACHINES, namespace=NS, limit=2000)).items
        done = sum(ready(m) for m in items)
        print(f"  {time.monotonic() - started:6.0f} s: {done}/{count} Ready", flush=True)
        if done >= count:
            return time.monotonic() - started
        await asyncio.sleep(5)
    raise TimeoutError(f"not all {count} Machines Ready within {limit:.0f} s")


async def gate_latency(
    meta: Client, business: Client, machines: int, samples: int
) -> dict[str, float]:
    """Flip the gate of ``samples`` nodes, one at a time: False (the taint must come) and back
    to True (it must go); seconds from the ConfigMap write to the change on the node, as
    seen by a watch on the business cluster's nodes."""
    listed = await business.list(NODES, limit=1)
    latencies: list[float] = []
    version = listed.resource_version
    changed: dict[str, asyncio.Future[float]] = {}

    async def watch() -> None:
        nonlocal version
        while True:
            async for event in business.watch(NODES, resource_version=version):
                obj = event.object
                version = obj["metadata"]["resourceVersion"]
                name = obj["metadata"].get("name")
                waiter = changed.get(name)
                if waiter and not waiter.done() and tainted(obj) == waiter_wants[name]:
                    waiter.set_result(time.monotonic())

    waiter_wants: dict[str, bool] = {}
    watcher = asyncio.create_task(watch())
    await asyncio.sleep(1)  # the watch is open before the first write
    try:
        for i in range(samples):
            name = f"m{(i * 7919) % machines:05d}"
            for status, want_taint in (("False", True), ("True", False)):
                loop = asyncio.get_running_loop()
                changed[name] = loop.create_future()
                waiter_wants[name] = want_taint
                started = time.monotonic()
                await meta.patch(CONFIGMAPS, name, {"data": gate(status)}, namespace=NS)
                seen = await asyncio.wait_for(changed[name], 30)
                latencies.append(seen - started)
    finally:
        watcher.cancel()
    latencies.sort()
    return {
        "samples": len(latencies),
        "p50_seconds": round(latencies[len(latencies) // 2], 3),
        "p99_seconds": round(latencies[int(len(latencies) * 0.99)], 3),
        "max_seconds": round(latencies[-1], 3),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    assets = ensure_assets(release(None))
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-machines-") as tmp:
        meta = LocalCluster(Path(tmp) / "meta")
        meta.up(assets, progress=lambda _: None)
        kubectl = Kubectl(assets.bin("kubectl"), meta.kubeconfig)
        kubectl.apply([crd(k) for k in KINDS] + [namespace(NS)])
        kubectl.wait_established(*(f"{k.plural}.{k.group}" for k in KINDS))
        operator: subprocess.Popen[bytes] | None = None
        try:
            with business_cluster(
                kubectl, assets, meta.kubeconfig, Path(tmp) / "biz", NS, lease_seconds=600
            ) as biz:
                port = free_port()
                with (Path(tmp) / "operator.log").open("wb") as log:
                    operator = subprocess.Popen(
                        [
                            *(sys.executable, "-m", "kokpit", "operator", "machine"),
                            *("--kubeconfig", str(meta.kubeconfig), "--executors", "sim"),
                            *("--sim-latency", str(args.sim_latency)),
                            *("--workers", str(args.workers), "--qps", "1000"),
                            *("--cluster-qps", "1000", "--health-port", str(port)),
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                meta_config = ClientConfig.from_kubeconfig(meta.kubeconfig, qps=2000, burst=4000)
                biz_config = ClientConfig.from_kubeconfig(biz.kubeconfig, qps=200, burst=400)
                async with Client(meta_config) as client, Client(biz_config) as business:
                    versions = [
                        package("sysctl", "SystemConfig", "1"),
                        package("containerd", "ContainerRuntime", "2.0.5"),
                        package("kubelet", "Kubelet", "1.36.3"),
                    ]
                    await client.create(
                        PACKAGE_VERSIONS,
                        {
                            "apiVersion": "kokpit.io/v1alpha1",
                            "kind": "MachinePackageVersion",
                            "metadata": {"name": "bench-v1"},
                            "spec": {"packages": versions},
                        },
                    )
                    await asyncio.sleep(3)  # the operator is up and synced
                    cpu0, _, _ = proc_stats(operator.pid)
                    requests0 = requests_made(port)
                    started = time.monotonic()
                    sem = asyncio.Semaphore(32)

                    async def create(i: int) -> None:
                        async with sem:
                            await client.create(MACHINES, machine(i))

                    reporter = asyncio.create_task(report_gates(client, args.machines))
                    await asyncio.gather(*(create(i) for i in range(args.machines)))
                    created = time.monotonic() - started
                    all_ready = await wait_ready(client, args.machines, args.timeout) + created
                    reporter.cancel()
                    cpu1, rss, peak = proc_stats(operator.pid)
                    requests = requests_made(port) - requests0
                    scale = {
                        "machines": args.machines,
                        "nodes": args.machines,
                        "packages_per_machine": len(versions),
                        "readiness_gates_per_machine": 1,
                        "workers": args.workers,
                        "sim_step_latency_seconds": args.sim_latency,
                        "create_seconds": round(created, 1),
                        "all_ready_seconds": round(all_ready, 1),
                        "api_requests": int(requests),
                        "api_requests_per_machine": round(requests / args.machines, 2),
                        "operator_cpu_seconds": round(cpu1 - cpu0, 1),
                        "operator_rss_mib": round(rss, 1),
                        "operator_peak_rss_mib": round(peak, 1),
                    }
                    print(scale, flush=True)
                    latency = await gate_latency(client, business, args.machines, args.samples)
                    print(latency, flush=True)
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(30)
            meta.down()
    return {
        "kubernetes": assets.kubernetes_version,
        "scale": scale,
        "condition_configmap_to_schedulability": latency,
        "notes": "Business cluster: process runtime (one kube-apiserver, etcd, controller-"
        "manager, scheduler) with KWOK; node Leases of 600 s. Latency is from the ConfigMap "
        "write (meta-cluster) to the watch event of the node's taint change (business cluster).",
    }


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser()
    parser.add_argument("--machines", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--sim-latency", type=float, default=0.01)
    parser.add_argument("--timeout", type=float, default=3600)
    args = machine_info.parse_args(parser, quick={"machines": 300, "samples": 20})
    result = asyncio.run(run(args))
    print(f"wrote {machine_info.write('machine', result, quick=args.quick)}")


if __name__ == "__main__":
    main()
