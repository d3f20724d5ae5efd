"""A Rollout across a fleet → the ``rollout`` section of ``bench/results/risk.json``.

A fresh local meta-cluster holds N Machines (``sim`` executor) at a MachinePackageVersion of
one package of kind ``Other``, all Ready. A Rollout then moves all N to the next version in
equal batches (canary first), with no pause and no analysis; the Rollout-Operator and the
Machine-Operator run as their own processes (``kokpit operator rollout|machine``, the admin
kubeconfig: their RBAC is not what is measured). The packages install no kubelet, so no Node
joins and no business cluster is started: the Machines' ``clusterRef`` names a Cluster that
does not exist, which nothing reads for a Machine without a Kubelet package. The figure is
the rollout's, not node registration's.

Recorded per rollout: the time from the Rollout's creation to phase Succeeded; per batch, as a
watch on the Rollout saw it, when it started, when all its Machines were changed, when all
were Ready at the new version and when it passed; each operator's API requests per Machine
(its own ``rest_client_requests_total``, by method and code, scraped before and after); the
Rollout-Operator's reconciles, reconcile time, rate-limiter wait, CPU seconds and memory.
The fleet grows through the sizes of ``--machines`` (1,000, then 2,000 more, then 7,000 more),
and at each size one Rollout moves all of it to the next version, the Rollout-Operator started
afresh each time at its default ``--max-concurrent-changes``: the cost curve. At the largest
size, more rollouts follow on the same Machines: a higher ``--max-concurrent-changes``, and the
default again (how much two runs of one setting differ on this shared machine).

    python -m bench.rollout [--machines 1000,3000,10000] [--batches 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import machine as machine_info
from bench.cluster import proc_stats, ready
from bench.interrupt import stop_on_sigterm
from kokpit.api.schema import crd
from kokpit.api.v1alpha1 import KINDS, MACHINES, ROLLOUTS
from kokpit.api.v1alpha1 import MACHINE_PACKAGE_VERSIONS as PACKAGE_VERSIONS
from kokpit.controllers.rollout import RolloutOptions
from kokpit.local import Kubectl, LocalCluster, ensure_assets, release
from kokpit.local.nodes import free_port
from kokpit.local.workloads import namespace
from kokpit.runtime import Client, ClientConfig

NS = "fleet"
#: What the figures mean (recorded with them; the docs quote it).
MEANING = {
    "ready": "a Machine Ready at the new version as the Machine-Operator reports it: "
    "status.packageVersion is the new one, observedGeneration current and Ready True. With the "
    "sim executor no host work is done (each step waits --sim-latency); the one package is of "
    "kind Other, so no Node joins and no business cluster exists: the figure is the "
    "rollout's and the Machine-Operator's, not node registration's.",
    "total_seconds": "from the Rollout's creation (the bench's create request) to the watch "
    "event that shows it Succeeded.",
    "batches": "seconds since the Rollout's creation at which a watch on the Rollout first "
    "saw the batch started (Verifying: recorded before any of its Machines is changed), all "
    "its Machines changed (status changed == size: the reconcile that patched them has "
    "written its status) and passed (every Machine of it Ready at the new version, as the "
    "Rollout-Operator saw them); seconds = passed - started. The next batch starts in the "
    "reconcile in which one passes (no pause). The status's ready count is written at the end "
    "of a reconcile, after the next batch's start, so it is not used.",
    "requests": "each operator's own rest_client_requests_total (by HTTP method and status "
    "code; watches are GETs) during the rollout, from its /metrics before the Rollout's "
    "creation and after it Succeeded, divided by the number of Machines moved.",
    "rollout_operator": "the Rollout-Operator's process, started afresh for each rollout: CPU "
    "seconds during the rollout, resident memory after it and at its peak (the cache of all "
    "N Machines is most of it), its reconciles, their mean time, the mean time a key waited "
    "in its queue and the total time its requests waited for its client-side rate limit.",
}
#: The Machine-Operator's settings, those of bench.machines (which moves as many Machines);
#: its periodic recheck of every host, not what is measured, is put past the run: all N were
#: created within minutes, so their rechecks would fall due together in a later rollout.
MACHINE_OPERATOR = ("--workers", "64", "--qps", "1000", "--recheck-interval", "7200")
#: Concurrent creates of the bench's own Machines.
CREATORS = 32


def package_version(name: str, version: str) -> dict[str, Any]:
    """One package of kind Other (no kubelet: no Node joins) whose steps do nothing."""
    script = {"check": {"run": "true"}, "install": {"run": "true"}, "remove": {"run": "true"}}
    app = {"name": "app", "kind": "Other", "version": version, "install": {"script": script}}
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "MachinePackageVersion",
        "metadata": {"name": name},
        "spec": {"packages": [app]},
    }


def machine(i: int, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": f"m{i:05d}", "namespace": NS, "labels": {"fleet": "bench"}},
        "spec": {
            # No Cluster of this name exists: a Machine without a Kubelet package never joins.
            "clusterRef": {"name": "none"},
            "executor": "sim",
            "address": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            "packageVersion": version,
        },
    }


def rollout(name: str, version: str, batches: int, timeout: int) -> dict[str, Any]:
    share = f"{100 // batches}%"
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "target": {
                "kind": "Machine",
                "selector": {"matchLabels": {"fleet": "bench"}},
                "packageVersion": version,
            },
            "batches": [{"size": share} for _ in range(batches)],
            "healthCheck": {"timeoutSeconds": timeout},
        },
    }


def at_version(obj: dict[str, Any], version: str) -> bool:
    status = obj.get("status") or {}
    return (
        status.get("packageVersion") == version
        and status.get("observedGeneration") == obj["metadata"].get("generation")
        and ready(obj)
    )


# -- operators ------------------------------------------------------------------------------


class Operator:
    """``kokpit operator <which>`` as a process of its own, its metrics on a port of its own."""

    def __init__(self, which: str, kubeconfig: Path, log: Path, args: Sequence[str]) -> None:
        self.which = which
        self.port = free_port()
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "kokpit", "operator", which),
                *("--kubeconfig", str(kubeconfig), "--health-port", str(self.port), *args),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self, limit: float = 120) -> None:
        started = time.monotonic()
        while time.monotonic() - started < limit:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.which} operator exited ({self.process.returncode})")
            if await asyncio.to_thread(self._ready_now):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"the {self.which} operator not ready within {limit:.0f} s")

    def _ready_now(self) -> bool:
        with contextlib.suppress(urllib.error.URLError, OSError):
            url = f"http://127.0.0.1:{self.port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        return False

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return parse_metrics(r.read().decode())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


#: Keys of :func:`parse_metrics` that are not request counts.
RECONCILES, WORK_SECONDS, QUEUE_SECONDS, QUEUED, LIMITER_SECONDS, PATCH_SECONDS, PATCHES = (
    "~reconciles",
    "~work_seconds",
    "~queue_seconds",
    "~queued",
    "~rate_limiter_seconds",
    "~patch_seconds",
    "~patches",
)


def parse_metrics(text: str) -> dict[str, float]:
    """An operator's requests so far by ``"<METHOD> <code>"``, and under keys starting with
    ``~`` its reconciles, their total time, the total time keys waited in its queues and its
    requests waited for its client-side rate limit."""
    found: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if not rest:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', rest.split("}", 1)[0]))
        value = float(line.rsplit(" ", 1)[-1])
        if name == "rest_client_requests_total":
            found[f"{labels.get('method', '')} {labels.get('code', '')}"] += value
        elif name == "controller_runtime_reconcile_total":
            found[RECONCILES] += value
        elif name == "workqueue_work_duration_seconds_sum":
            found[WORK_SECONDS] += value
        elif name == "workqueue_queue_duration_seconds_sum":
            found[QUEUE_SECONDS] += value
        elif name == "workqueue_queue_duration_seconds_count":
            found[QUEUED] += value
        elif name == "rest_client_rate_limiter_duration_seconds_sum":
            found[LIMITER_SECONDS] += value
        elif name == "rest_client_request_duration_seconds_sum" and labels.get("verb") == "PATCH":
            found[PATCH_SECONDS] += value
        elif name == "rest_client_request_duration_seconds_count" and labels.get("verb") == (
            "PATCH"
        ):
            found[PATCHES] += value
    return dict(found)


def requests_per_machine(
    before: dict[str, float], after: dict[str, float], machines: int
) -> dict[str, Any]:
    """Requests made between two scrapes per Machine, by method and code, and in all."""
    made = {
        k: after[k] - before.get(k, 0.0)
        for k in sorted(after)
        if not k.startswith("~") and after[k] - before.get(k, 0.0) > 0
    }
    return {
        "total": round(sum(made.values()) / machines, 3),
        "by_method": {k: round(v / machines, 3) for k, v in made.items()},
    }


# -- one rollout ----------------------------------------------------------------------------


async def follow(
    client: Client, name: str, resource_version: str, created: asyncio.Event, t0: list[float]
) -> dict[str, Any]:
    """Watch the Rollout from before its creation until it is finished: when each batch was
    first seen started, changed, Ready and passed (seconds since ``t0[0]``, its creation)."""
    seen: dict[int, dict[str, float]] = {}
    last: dict[str, Any] = {}
    version = resource_version
    while True:
        async for event in client.watch(ROLLOUTS, namespace=NS, resource_version=version):
            obj = event.object
            version = obj["metadata"]["resourceVersion"]
            if obj["metadata"].get("name") != name or event.type == "BOOKMARK":
                continue
            await created.wait()
            at = time.monotonic() - t0[0]
            status = obj.get("status") or {}
            for batch in status.get("batches") or []:
                marks = seen.setdefault(batch["index"], {})
                size = int(batch.get("size") or 0)
                if batch["state"] not in ("Pending", "Waiting"):
                    marks.setdefault("started", at)
                if size and int(batch.get("changed") or 0) >= size:
                    marks.setdefault("changed", at)
                if batch["state"] in ("Pausing", "Succeeded", "Skipped", "Failed"):
                    marks.setdefault("passed", at)
            last = status
            if status.get("phase") in ("Succeeded", "Aborted"):
                return {"at": at, "status": last, "seen": seen}


async def one_rollout(
    client: Client,
    kubeconfig: Path,
    tmp: Path,
    machine_operator: Operator,
    machines: int,
    version: str,
    changes: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """A Rollout of every Machine to ``version`` under a fresh Rollout-Operator with
    ``--max-concurrent-changes changes``."""
    name = f"to-{version}"
    operator = Operator(
        "rollout",
        kubeconfig,
        tmp / f"rollout-{version}.log",
        ("--max-concurrent-changes", str(changes), "--qps", str(args.rollout_qps)),
    )
    try:
        await operator.ready()
        await asyncio.sleep(2)  # its first list's reconciles are done
        rollout_before, machine_before = operator.metrics(), machine_operator.metrics()
        cpu0, _, _ = proc_stats(operator.process.pid)
        mcpu0, _, _ = proc_stats(machine_operator.process.pid)
        listed = await client.list(ROLLOUTS, namespace=NS)
        created, t0 = asyncio.Event(), [0.0]
        watcher = asyncio.create_task(follow(client, name, listed.resource_version, created, t0))
        t0[0] = time.monotonic()
        await client.create(ROLLOUTS, rollout(name, version, args.batches, int(args.timeout)))
        created.set()
        done = await asyncio.wait_for(watcher, args.timeout * args.batches)
        cpu1, rss, peak = proc_stats(operator.process.pid)
        mcpu1, mrss, _ = proc_stats(machine_operator.process.pid)
        rollout_after, machine_after = operator.metrics(), machine_operator.metrics()
    finally:
        operator.stop()
    status = done["status"]
    reconciles = rollout_after.get(RECONCILES, 0.0) - rollout_before.get(RECONCILES, 0.0)
    queued = rollout_after.get(QUEUED, 0.0) - rollout_before.get(QUEUED, 0.0)
    patches = rollout_after.get(PATCHES, 0.0) - rollout_before.get(PATCHES, 0.0)
    batches = []
    for entry in status.get("batches") or []:
        marks = {k: round(v, 2) for k, v in done["seen"].get(entry["index"], {}).items()}
        started, passed = marks.get("started"), marks.get("passed")
        batches.append(
            {
                "index": entry["index"],
                "size": entry.get("size"),
                "state": entry["state"],
                **{f"{k}_at": v for k, v in marks.items()},
                "seconds": round(passed - started, 2) if started and passed else None,
                "status_started_at": entry.get("startedAt"),
                "status_finished_at": entry.get("finishedAt"),
            }
        )
    moved = int(status.get("updated") or 0) or machines
    result = {
        "machines": machines,
        "to": version,
        "max_concurrent_changes": changes,
        "phase": status.get("phase"),
        "moved": status.get("updated"),
        "total_seconds": round(done["at"], 2),
        "batches": batches,
        "requests_per_machine": {
            "rollout_operator": requests_per_machine(rollout_before, rollout_after, moved),
            "machine_operator": requests_per_machine(machine_before, machine_after, moved),
        },
        "rollout_operator": {
            "cpu_seconds": round(cpu1 - cpu0, 2),
            "rss_mib": round(rss, 1),
            "peak_rss_mib": round(peak, 1),
            "reconciles": int(reconciles),
            "mean_reconcile_seconds": round(
                (rollout_after.get(WORK_SECONDS, 0.0) - rollout_before.get(WORK_SECONDS, 0.0))
                / reconciles,
                3,
            )
            if reconciles
            else None,
            "mean_queue_wait_seconds": round(
                (rollout_after.get(QUEUE_SECONDS, 0.0) - rollout_before.get(QUEUE_SECONDS, 0.0))
                / queued,
                3,
            )
            if queued
            else None,
            "cpu_seconds_per_reconcile": round((cpu1 - cpu0) / reconciles, 3)
            if reconciles
            else None,
            "mean_patch_seconds": round(
                (rollout_after.get(PATCH_SECONDS, 0.0) - rollout_before.get(PATCH_SECONDS, 0.0))
                / patches,
                3,
            )
            if patches
            else None,
            "rate_limiter_wait_seconds": round(
                rollout_after.get(LIMITER_SECONDS, 0.0) - rollout_before.get(LIMITER_SECONDS, 0.0),
                2,
            ),
        },
        "machine_operator": {
            "cpu_seconds": round(mcpu1 - mcpu0, 2),
            "rss_mib": round(mrss, 1),
            "reconciles": int(
                machine_after.get(RECONCILES, 0.0) - machine_before.get(RECONCILES, 0.0)
            ),
        },
    }
    if status.get("phase") != "Succeeded":
        result["abort_reason"] = status.get("abortReason")
    print(result, flush=True)
    return result


# -- the fleet ------------------------------------------------------------------------------


async def wait_at(client: Client, count: int, version: str, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        items = (await client.list(MACHINES, namespace=NS, limit=2000)).items
        done = sum(at_version(m, version) for m in items)
        print(f"  {time.monotonic() - started:6.0f} s: {done}/{count} Ready at {version}")
        if done >= count:
            return time.monotonic() - started
        await asyncio.sleep(5)
    raise TimeoutError(f"not all {count} Machines Ready at {version} within {limit:.0f} s")


async def grow(
    client: Client, have: int, count: int, version: str, limit: float
) -> dict[str, float]:
    """Machines ``have`` to ``count`` created at ``version`` (where the fleet is), and all
    ``count`` Ready at it."""
    sem = asyncio.Semaphore(CREATORS)

    async def create(i: int) -> None:
        async with sem:
            await client.create(MACHINES, machine(i, version))

    started = time.monotonic()
    await asyncio.gather(*(create(i) for i in range(have, count)))
    created = time.monotonic() - started
    return {
        "machines": count,
        "created": count - have,
        "create_seconds": round(created, 1),
        "ready_seconds": round(created + await wait_at(client, count, version, limit), 1),
    }


def plan(sizes: Sequence[int], changes: Sequence[int]) -> list[tuple[int, int]]:
    """(machines, --max-concurrent-changes) of each rollout, in order: the default at each
    size up to the largest, then every setting of ``changes`` at the largest."""
    default = RolloutOptions().max_concurrent_changes
    *smaller, largest = sorted(sizes)
    return [(size, default) for size in smaller] + [(largest, c) for c in changes]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    assets = ensure_assets(release(None))
    default = RolloutOptions().max_concurrent_changes
    steps = plan(args.machines, args.changes or [default, 64, default])
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-rollout-") as tmp_name:
        tmp = Path(tmp_name)
        meta = LocalCluster(tmp / "meta")
        meta.up(assets, progress=lambda _: None)
        machine_operator: Operator | None = None
        try:
            kubectl = Kubectl(assets.bin("kubectl"), meta.kubeconfig)
            kubectl.apply([crd(k) for k in KINDS] + [namespace(NS)])
            kubectl.wait_established(*(f"{k.plural}.{k.group}" for k in KINDS))
            machine_operator = Operator(
                "machine",
                meta.kubeconfig,
                tmp / "machine.log",
                ("--executors", "sim", "--sim-latency", str(args.sim_latency), *MACHINE_OPERATOR),
            )
            config = ClientConfig.from_kubeconfig(meta.kubeconfig, qps=2000, burst=4000)
            async with Client(config) as client:
                for v in range(1, len(steps) + 2):
                    await client.create(PACKAGE_VERSIONS, package_version(f"bench-v{v}", str(v)))
                await machine_operator.ready()
                setups: list[dict[str, float]] = []
                rollouts = []
                have = 0
                for i, (machines, changes) in enumerate(steps):
                    current, version = f"bench-v{i + 1}", f"bench-v{i + 2}"
                    if machines > have:
                        setups.append(await grow(client, have, machines, current, args.timeout))
                        print(f"{machines} Machines Ready at {current}: {setups[-1]}", flush=True)
                        have = machines
                    rollouts.append(
                        await one_rollout(
                            client,
                            meta.kubeconfig,
                            tmp,
                            machine_operator,
                            machines,
                            version,
                            changes,
                            args,
                        )
                    )
        finally:
            if machine_operator is not None:
                machine_operator.stop()
            meta.down()
    sizes = ", ".join(str(n) for n in sorted(args.machines))
    return {
        "what": (
            f"Rollouts of a fleet of sim Machines grown through {sizes}, each in {args.batches} "
            "equal batches (canary first, no pause, no analysis) to the next "
            "MachinePackageVersion (one package of kind Other); each operator a process of "
            "its own"
        ),
        "meaning": MEANING,
        "kubernetes": assets.kubernetes_version,
        "machines": sorted(args.machines),
        "batches": args.batches,
        "sim_step_latency_seconds": args.sim_latency,
        "machine_operator_flags": " ".join(MACHINE_OPERATOR),
        "rollout_operator_qps": args.rollout_qps,
        "fleet_setup": setups,
        "rollouts": rollouts,
    }


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--machines",
        type=machine_info.ints,
        default=[1_000, 3_000, 10_000],
        help="the fleet's sizes, grown in turn; one rollout at each (default: 1000,3000,10000)",
    )
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument(
        "--changes",
        type=machine_info.ints,
        default=None,
        help="the Rollout-Operator's --max-concurrent-changes of each rollout at the largest "
        "size, one after the other on the same Machines (default: its default, 64, its "
        "default again)",
    )
    parser.add_argument(
        "--rollout-qps",
        type=float,
        default=200.0,
        help="the Rollout-Operator's --qps (default: the operators' default, 200)",
    )
    parser.add_argument("--sim-latency", type=float, default=0.01)
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds per batch, and for the set-up"
    )
    args = machine_info.parse_args(parser, quick={"machines": [200, 500]})
    result = asyncio.run(run(args))
    path = machine_info.write_section("risk", "rollout", result, quick=args.quick)
    summary = [
        (r["machines"], r["max_concurrent_changes"], r["total_seconds"]) for r in result["rollouts"]
    ]
    print(f"(machines, max concurrent changes, seconds): {summary} → {path}")


if __name__ == "__main__":
    main()
