"""The Machine-Operator at scale → ``bench/results/machine.json``.

A fresh local meta-cluster holds N Machines (``sim`` executor, three packages, one readiness
gate); they join a business cluster (real control plane, ``process`` runtime) whose N nodes
KWOK plays. The operator runs as its own process (``kokpit operator machine``); this script
plays the network operator that reports each node's gate in its Condition ConfigMap.

Recorded: time until every Machine is Ready; API requests per Machine (the operator's own
``rest_client_requests_total``, meta-cluster and business cluster); the operator's resident
memory and CPU; its work queue's depth and the time keys wait in it against the reconcile
time (where a latency goes); and, with all N in place, the latency from a Condition
ConfigMap write to the node's schedulability change (the not-ready taint added or removed),
p50 and p99.

    python -m bench.machines [--counts 1000,2000,5000] [--samples N] [--quick]
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

import aiohttp

from bench import machine as machine_info
from bench import plot, stats
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
#: What the figures mean (recorded with them; the docs quote it).
MEANING = {
    "ready": "Machine Ready: its three packages report installed (the sim executor: no host "
    "work is done, each step waits --sim-latency), its node registered (a KWOK node) and its "
    "readiness gate True, so the not-ready taint is gone.",
    "business_cluster": "process runtime (one real kube-apiserver, etcd, controller-manager, "
    "scheduler); KWOK plays the kubelets; node Leases of 600 s.",
    "work_queue": "the operator's work queue while the step's Machines join: deepest and mean "
    "depth (sampled each second), mean time a key waited in the queue and mean reconcile "
    "time (from workqueue_queue_duration_seconds and workqueue_work_duration_seconds).",
    "gate_latency": "from the Condition ConfigMap write (meta-cluster) to the watch event of "
    "the node's taint change (business cluster); under_load: while the last step's Machines "
    "are still joining; idle: after all are Ready. A change not seen within "
    "sample_limit_seconds is counted as taking that long (timed_out says how many).",
}
#: How long one gate change may take to reach its node before it is counted at this limit.
SAMPLE_LIMIT = 60.0
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


def scrape(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text.splitlines()


def requests_made(port: int) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in scrape(port)
        if line.startswith("rest_client_requests_total{")
    )


def queue_figures(port: int) -> dict[str, float]:
    """The Machine-Operator's work queue, from its metrics: depth now, and the running sums
    and counts of the time keys waited in it and of the reconciles (work)."""
    wanted = {
        "workqueue_depth": "depth",
        "workqueue_queue_duration_seconds_sum": "wait_sum",
        "workqueue_queue_duration_seconds_count": "wait_count",
        "workqueue_work_duration_seconds_sum": "work_sum",
        "workqueue_work_duration_seconds_count": "work_count",
    }
    figures = {}
    for line in scrape(port):
        metric, _, rest = line.partition("{")
        if metric in wanted and 'name="machine"' in rest.rpartition("}")[0].split(","):
            figures[wanted[metric]] = float(line.rpartition(" ")[2])
    return figures


async def watch_queue(port: int, until: asyncio.Task[Any]) -> dict[str, float]:
    """While ``until`` runs: the queue's deepest and mean depth (sampled each second), and the
    mean time a key waited in it against the mean reconcile: where a step's latency goes."""
    before = await asyncio.to_thread(queue_figures, port)
    depths = []
    while not until.done():
        depths.append((await asyncio.to_thread(queue_figures, port)).get("depth", 0.0))
        await asyncio.sleep(1)
    after = await asyncio.to_thread(queue_figures, port)

    def mean(kind: str) -> float:
        count = after.get(f"{kind}_count", 0.0) - before.get(f"{kind}_count", 0.0)
        total = after.get(f"{kind}_sum", 0.0) - before.get(f"{kind}_sum", 0.0)
        return round(total / count, 3) if count else 0.0

    return {
        "max_depth": max(depths, default=0.0),
        "mean_depth": round(sum(depths) / len(depths), 1) if depths else 0.0,
        "mean_queue_wait_seconds": mean("wait"),
        "mean_reconcile_seconds": mean("work"),
    }


async def report_gates(meta: Client, count: int) -> None:
    """The network operator: report the gate True as each ConfigMap appears (one watch)."""
    selector = "kokpit.io/node-conditions=true"
    version = (await meta.list(CONFIGMAPS, namespace=NS, label_selector=selector)).resource_version
    reported: set[str] = set()
    sem = asyncio.Semaphore(32)
    tasks: set[asyncio.Task[None]] = set()

    async def one(name: str) -> None:
        async with sem:
            # A merge patch of the same data is safe to send again; the client does not
            # retry a PATCH on a dropped connection (it cannot know the patch is idempotent).
            for attempt in range(5):
                try:
                    await meta.patch(CONFIGMAPS, name, {"data": gate("True")}, namespace=NS)
                    return
                except aiohttp.ClientError:
                    await asyncio.sleep(0.5 * (attempt + 1))
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


async def wait_ready(meta: Client, first: int, count: int, limit: float) -> float:
    """Seconds until Machines ``first`` to ``count - 1`` (the ones just added) are Ready. The
    Machines before them do not count: the gate sampler keeps one of them briefly not Ready,
    and waiting for all would wait for a moment between two of its samples."""
    started = time.monotonic()
    added = {f"m{i:05d}" for i in range(first, count)}
    while time.monotonic() - started < limit:
        items = (await meta.list(MACHINES, namespace=NS, limit=2000)).items
        done = sum(ready(m) for m in items if m["metadata"]["name"] in added)
        print(f"  {time.monotonic() - started:6.0f} s: {done}/{len(added)} Ready", flush=True)
        if done >= len(added):
            return time.monotonic() - started
        await asyncio.sleep(5)
    raise TimeoutError(f"not all {len(added)} added Machines Ready within {limit:.0f} s")


async def gate_latency(
    meta: Client,
    business: Client,
    machines: int,
    samples: int,
    until: asyncio.Task[Any] | None = None,
) -> dict[str, float]:
    """Flip the gate of ``samples`` nodes among the first ``machines``, one at a time: False
    (the taint must come) and back to True (it must go); seconds from the ConfigMap write to
    the change on the node, as seen by a watch on the business cluster's nodes. With
    ``until``, stop early once that task is done (the load it measures under is over)."""
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
    timed_out = 0
    watcher = asyncio.create_task(watch())
    await asyncio.sleep(1)  # the watch is open before the first write
    try:
        for i in range(samples):
            if until is not None and until.done():
                break
            name = f"m{(i * 7919) % machines:05d}"
            for status, want_taint in (("False", True), ("True", False)):
                loop = asyncio.get_running_loop()
                changed[name] = loop.create_future()
                waiter_wants[name] = want_taint
                started = time.monotonic()
                await meta.patch(CONFIGMAPS, name, {"data": gate(status)}, namespace=NS)
                try:
                    seen = await asyncio.wait_for(changed[name], SAMPLE_LIMIT)
                except TimeoutError:
                    # Counted at the limit, so a percentile it reaches says "at least this".
                    timed_out += 1
                    seen = started + SAMPLE_LIMIT
                latencies.append(seen - started)
    finally:
        watcher.cancel()
    latencies.sort()
    if not latencies:
        return {"samples": 0}
    return {
        "samples": len(latencies),
        "p50_seconds": round(latencies[len(latencies) // 2], 3),
        "p99_seconds": round(latencies[int(len(latencies) * 0.99)], 3),
        "max_seconds": round(latencies[-1], 3),
        "timed_out": timed_out,
        "sample_limit_seconds": SAMPLE_LIMIT,
    }


async def grow(
    client: Client, business: Client, operator: int, port: int, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Create Machines in steps up to each of ``args.counts``. Per step: the time until the
    added ones are Ready, the operator's requests and CPU per added Machine, its memory after;
    and, from the second step on, the gate latency on Machines already Ready while the added
    ones join (the operator under load)."""
    sem = asyncio.Semaphore(32)

    async def create(i: int) -> None:
        async with sem:
            await client.create(MACHINES, machine(i))

    async def add(first: int, count: int) -> float:
        started = time.monotonic()
        await asyncio.gather(*(create(i) for i in range(first, count)))
        return await wait_ready(client, first, count, args.timeout) + (time.monotonic() - started)

    steps: list[dict[str, Any]] = []
    made = 0
    for count in args.counts:
        cpu0, _, _ = proc_stats(operator)
        requests0 = requests_made(port)
        joining = asyncio.create_task(add(made, count))
        queue = asyncio.create_task(watch_queue(port, joining))
        under_load = None
        if made:
            under_load = await gate_latency(client, business, made, args.samples, until=joining)
        all_ready = await joining
        cpu1, rss, peak = proc_stats(operator)
        added = count - made
        step = {
            "machines": count,
            "added": added,
            "added_ready_seconds": round(all_ready, 1),
            "api_requests_per_added_machine": round((requests_made(port) - requests0) / added, 2),
            "operator_cpu_seconds_per_added_machine": round((cpu1 - cpu0) / added, 4),
            "operator_rss_mib": round(rss, 1),
            "operator_peak_rss_mib": round(peak, 1),
            "work_queue": await queue,
        }
        if under_load is not None:
            step["gate_latency_under_load"] = under_load
        print(step, flush=True)
        steps.append(step)
        made = count
    return steps


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
                    reporter = asyncio.create_task(report_gates(client, args.counts[-1]))
                    steps = await grow(client, business, operator.pid, port, args)
                    reporter.cancel()
                    latency = await gate_latency(client, business, args.counts[-1], args.samples)
                    print("idle", latency, flush=True)
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(30)
            meta.down()
    last = steps[-1]
    return {
        "kubernetes": assets.kubernetes_version,
        "meaning": MEANING,
        "packages_per_machine": 3,
        "readiness_gates_per_machine": 1,
        "workers": args.workers,
        "sim_step_latency_seconds": args.sim_latency,
        "steps": steps,
        "operator_rss_mib_per_machine": stats.slope(
            [(s["machines"], s["operator_rss_mib"]) for s in steps]
        ),
        "condition_configmap_to_schedulability": {
            "idle": latency,
            "under_load": last.get("gate_latency_under_load"),
        },
    }


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--counts",
        type=machine_info.ints,
        default=[1_000, 2_000, 5_000],
        help="Machine counts to grow through",
    )
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--sim-latency", type=float, default=0.01)
    parser.add_argument("--timeout", type=float, default=3600)
    args = machine_info.parse_args(parser, quick={"counts": [100, 200, 400], "samples": 20})
    result = asyncio.run(run(args))
    path = machine_info.write("machine", result, quick=args.quick)
    plot.machines(result, path.parent / "plots")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
