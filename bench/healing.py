"""The self-healing loop at fleet size → ``bench/results/healing.json``.

A fresh local meta-cluster holds N Machines (``sim`` executor) joined to ``--clusters``
business clusters (4 by default; ``process`` runtime: each a real kube-apiserver, etcd,
controller-manager and scheduler, and its own KWOK) whose N nodes KWOK plays, spread evenly
over the clusters and, in each, over ten failure domains (``topology.kubernetes.io/zone``). The
Machines and their Nodes are created directly in the joined state the Machine-Operator leaves
(Machine ``status.nodeName`` and ``phase: Running``, the Node registered as
:class:`~kokpit.providers.machine.kubelet.KwokKubelet` registers it): joining 10,000 Machines
through the Machine-Operator is ``bench.machines``'s subject and takes most of an hour here,
and nothing of the healing loop depends on how the node joined. The remediation operator runs
as its own process (``kokpit operator remediation --executors sim``): the real fault hub (its
per-cluster cache of Nodes and Leases, its probes of every host) and the real Remediation
workflow, whose RSS, CPU and API requests (its own ``rest_client_requests_total``) are its own.

Grown through each size, then per size:

1. **idle**: the operator's CPU and API requests over an idle interval (the hub probing every
   host once a minute, nothing failing);
2. **healing**: 1 % of the nodes report a KernelDeadlock (the Node condition, as
   node-problem-detector writes it), spread over the domains. The policy's ladder is one
   rung, RestartKubelet over the sim executor. When a remediation's repair has run (its
   attempt is on record), this script plays the recovered node and sets the condition False;
   the workflow verifies, uncordons and ends it Succeeded. Measured per fault: condition write
   → NodeFault Active (detection), → Node unschedulable (cordon), → Remediation Succeeded;
   remediations completed per minute; the operator's API requests per remediation; its CPU
   while busy;
3. **storm**: 40 % of one domain report the fault at once, below the policy's
   ``minHealthyPercent`` (70): the time from the first write to the policy's
   ``StormStopped=True``, and how many of those nodes were cordoned or had a repair started
   (the storm stop's promise is none). The faults are then cleared and their remediations end
   without a repair before the next size.

    python -m bench.healing [--nodes 1000,3000,10000] [--clusters 4] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench import machine as machine_info
from bench import plot, stats
from bench.cluster import proc_stats
from bench.interrupt import stop_on_sigterm
from fixtures.business import business_clusters
from kokpit.api.schema import crd
from kokpit.api.v1alpha1 import (
    KINDS,
    MACHINE_PACKAGE_VERSIONS,
    MACHINES,
    NODE_FAULTS,
    REMEDIATION_POLICIES,
    REMEDIATIONS,
)
from kokpit.local import Kubectl, LocalCluster, ensure_assets, release
from kokpit.local.nodes import free_port
from kokpit.local.workloads import namespace
from kokpit.providers.machine.kubelet import KwokKubelet, Registration
from kokpit.runtime import AlreadyExists, Client, ClientConfig, Gone, PatchType, Resource
from kokpit.runtime.resources import NODES

NS = "fleet"
POLICY = "bench-heal"
ZONE = "topology.kubernetes.io/zone"
#: Failure domains the nodes are spread over (node i is in zone i mod ZONES).
ZONES = 10
#: Business clusters by default; node i is in cluster (i // ZONES) mod clusters, so every
#: cluster holds every zone.
CLUSTERS = 4
#: The domain the storm hits, and the share of its nodes that fail.
STORM_ZONE = ZONES - 1
STORM_SHARE = 0.40
MIN_HEALTHY = 70
FAILING_SHARE = 0.01
#: A fault type node-problem-detector reports, one of the policy's.
FAULT = "KernelDeadlock"
#: KWOK renews node Leases every quarter of this (600 s: 150 s), so the hub's Lease grace must
#: exceed it or every node would turn NodeLeaseStale between renewals.
LEASE_SECONDS = 600
#: Flags the operator runs with besides --kubeconfig and --health-port; the rest are defaults.
OPERATOR_FLAGS = ("--executors", "sim", "--lease-grace", "900")

#: Keys of :func:`requests_made`'s counts that are times or other counts, not requests.
TIMES = "time: "
WAITED = TIMES + "rate limiter wait ms"
API_MS, API_COUNT = TIMES + "api ms", TIMES + "api count"
QUEUE_MS, QUEUE_COUNT = TIMES + "queue ms ", TIMES + "queue count "

MEANING = {
    "joined": "Machines (sim executor) and their KWOK Nodes are created directly in the "
    "joined state the Machine-Operator leaves (status.nodeName, phase Running; the Node "
    "registered for the Machine), not joined by a Machine-Operator: faster to set up at "
    "10,000, and the fault hub and the Remediation workflow see the same objects.",
    "clusters": "business_clusters business clusters made by one Cluster-Operator (process "
    "runtime), each with its own KWOK; node i is in cluster (i // 10) mod business_clusters "
    "and zone i mod 10, so every cluster holds every zone, and a storm scope is a zone of one "
    "cluster.",
    "operator": "kokpit operator remediation as its own process, admin credentials of the "
    "meta-cluster, the flags in operator_flags and every other setting at its default "
    "(see operator_defaults).",
    "policy": "one RemediationPolicy over all Machines: KernelDeadlock → RestartKubelet "
    "(sim: recorded, no host work), recoverySeconds 1, stormStop maxConcurrent 10000 (so "
    "the figures are the operator's, not the policy's limit), minHealthyPercent 70 per "
    "topology.kubernetes.io/zone; no pods on the nodes, so the drain has nothing to evict.",
    "detection": "from just before the KernelDeadlock=True status patch of the Node "
    "(its business cluster) to this script's watch event of its NodeFault turning Active.",
    "cordon": "from the same write to the watch event of the Node turning unschedulable; "
    "detection_to_cordon is the difference per fault.",
    "done": "a remediation is done when its phase is Succeeded (repair ran, the fault "
    "Cleared and the Node Ready for recoverySeconds, uncordoned). The node's recovery is "
    "played by this script: it sets the condition False on seeing the repair attempt on "
    "record, so done includes that reaction and recoverySeconds.",
    "remediations_per_minute": "faults of the round / (last Succeeded - first write) * 60.",
    "api_requests_per_remediation": "the operator's rest_client_requests_total (meta-cluster "
    "and business clusters) during the round / faults; above_idle subtracts the idle rate "
    "over the round's duration.",
    "rate_limiter_wait": "seconds the operator's requests of a round waited for its own "
    "client-side rate limit (--qps, 200 by default), summed over the requests, per "
    "remediation: above zero, the operator throttles itself.",
    "where_time_went": "over a round: api_request_ms_mean, the mean duration of the "
    "operator's API requests (both clusters, watches not counted); queue_wait_seconds_mean, "
    "per controller, the mean time a key waited in its work queue for a worker.",
    "cpu": "the operator process's CPU (utime + stime) over the interval, in mCPU "
    "(thousandths of one core): idle over --idle seconds with nothing failing, busy over "
    "the healing round.",
    "storm": "40 % of one zone's nodes in one cluster (biz-0: one storm-stop scope) report the "
    "fault at once; stop_seconds is the first write to the watch event of the policy's "
    "StormStopped=True; cordoned and repairs_started "
    "count those nodes' remediations that got past Pending, --storm-hold seconds after the "
    "stop (the storm stop promises zero). below_min_seconds: when the hub's record of the "
    "fault that takes the zone below minHealthyPercent (fault number below_min_at_fault) "
    "turned Active; all_detected_seconds: the last; both from the first write.",
}


def name_of(i: int) -> str:
    return f"n{i:05d}"


def zone_of(i: int) -> str:
    return f"z{i % ZONES}"


def failing(size: int, round_index: int) -> list[int]:
    """1 % of ``size`` nodes (at least one), spread evenly over the nodes and so over the
    zones: steps of 101 (coprime with the sizes used, and 1 mod ZONES), from an offset per
    round, so each round fails other nodes."""
    count = max(1, math.floor(size * FAILING_SHARE))
    offset = round_index * 37
    picked = list(dict.fromkeys((offset + 101 * k) % size for k in range(count)))
    return picked


def storm_nodes(size: int, clusters: int) -> tuple[list[int], int]:
    """The nodes of the storm zone of the first cluster (one failure domain, the storm stop's
    scope) that fail (40 %, rounded up), and the zone's node count there."""
    zone = [i for i in range(size) if i % ZONES == STORM_ZONE and cluster_index(i, clusters) == 0]
    return zone[: math.ceil(len(zone) * STORM_SHARE)], len(zone)


def package_version() -> dict[str, Any]:
    script = {
        "check": {"run": "true"},
        "install": {"run": "true"},
        "verify": {"run": "true"},
        "restart": {"run": "true"},
    }
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "MachinePackageVersion",
        "metadata": {"name": "bench-v1"},
        "spec": {
            "packages": [
                {
                    "name": "kubelet",
                    "kind": "Kubelet",
                    "version": "1",
                    "install": {"script": script},
                }
            ]
        },
    }


def policy() -> dict[str, Any]:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "RemediationPolicy",
        "metadata": {"name": POLICY, "namespace": NS},
        "spec": {
            "machineSelector": {},
            "faultTypes": [FAULT],
            "steps": [{"action": "RestartKubelet", "timeoutSeconds": 300}],
            "recoverySeconds": 1,
            "stormStop": {
                "maxConcurrent": 10000,
                "minHealthyPercent": MIN_HEALTHY,
                "scopeLabel": ZONE,
            },
        },
    }


def requests_made(port: int, hosts: dict[str, str]) -> Counter[str]:
    """The operator's API requests so far, by ``"<cluster> <method>"``: ``hosts`` names the
    API servers (host:port → meta or business); and under keys that start with :data:`TIMES`,
    in milliseconds, where the time went: waiting for its own client-side rate limit
    (``--qps``), in API requests (not watches), and in each controller's work queue before a
    worker took the key (with their counts)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    made: Counter[str] = Counter()
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', rest.split("}", 1)[0]))
        value = float(line.rsplit(" ", 1)[-1]) if rest else 0.0
        if name == "rest_client_rate_limiter_duration_seconds_sum":
            made[WAITED] += int(value * 1000)
        elif name.startswith("rest_client_request_duration_seconds_") and labels.get("verb") != (
            "WATCH"
        ):
            if name.endswith("_sum"):
                made[API_MS] += int(value * 1000)
            elif name.endswith("_count"):
                made[API_COUNT] += int(value)
        elif name == "workqueue_queue_duration_seconds_sum":
            made[QUEUE_MS + labels.get("name", "")] += int(value * 1000)
        elif name == "workqueue_queue_duration_seconds_count":
            made[QUEUE_COUNT + labels.get("name", "")] += int(value)
        if line.startswith("rest_client_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            cluster = hosts.get(labels.get("host", ""), labels.get("host", ""))
            made[f"{cluster} {labels.get('method', '')}"] += int(float(line.rsplit(" ", 1)[1]))
    return made


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def retried(call: Callable[[], Awaitable[Any]], attempts: int = 5) -> Any:
    """A write the bench may send again (the same patch or a create of a fixed name): the
    client does not retry a dropped connection of a non-idempotent request itself."""
    for attempt in range(attempts):
        try:
            return await call()
        except (aiohttp.ClientError, TimeoutError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))
    return None


class Business:
    """The business clusters' clients, and which cluster each node is in."""

    def __init__(self, clients: list[Client]) -> None:
        self.clients = clients

    def of(self, node: str) -> Client:
        return self.clients[cluster_index(int(node[1:]), len(self.clients))]


def cluster_index(i: int, clusters: int) -> int:
    return (i // ZONES) % clusters


def cluster_name(i: int, clusters: int) -> str:
    return f"biz-{cluster_index(i, clusters)}"


async def report(business: Business, node: str, status: str) -> None:
    """The Node's KernelDeadlock condition, written as node-problem-detector writes it."""
    at = stamp()
    condition = {
        "type": FAULT,
        "status": status,
        "reason": "KernelHasDeadlock" if status == "True" else "KernelHasNoDeadlock",
        "message": "kernel: task blocked for more than 120 seconds"
        if status == "True"
        else "kernel is fine",
        "lastHeartbeatTime": at,
        "lastTransitionTime": at,
    }
    await retried(
        lambda: business.of(node).patch(
            NODES,
            node,
            {"status": {"conditions": [condition]}},
            patch_type=PatchType.STRATEGIC,
            subresource="status",
        )
    )


@dataclass
class Seen:
    """What the watches saw: per name, the latest object and the moments of interest."""

    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    remediations: dict[str, dict[str, Any]] = field(default_factory=dict)
    unschedulable: dict[str, bool] = field(default_factory=dict)
    #: name → monotonic time of the event, for the state each waiter asked about.
    active_at: dict[str, float] = field(default_factory=dict)
    cordoned_at: dict[str, float] = field(default_factory=dict)
    storm_stopped_at: float | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Watches:
    """One watch per kind the bench follows (NodeFaults, Remediations, the policy in the
    meta-cluster; Nodes in every business cluster): each event is timed as it arrives, so a
    latency is never a poll interval."""

    def __init__(self, meta: Client, business: Business) -> None:
        self.meta, self.business = meta, business
        self.seen = Seen()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Watches:
        follow = (
            (self.meta, NODE_FAULTS, NS, self._fault),
            (self.meta, REMEDIATIONS, NS, self._remediation),
            (self.meta, REMEDIATION_POLICIES, NS, self._policy),
            *((b, NODES, None, self._node) for b in self.business.clients),
        )
        for client, resource, ns, handler in follow:
            listed = await client.list(resource, namespace=ns, limit=2000)
            for obj in listed.items:
                handler(obj, 0.0)
            self._tasks.append(
                asyncio.create_task(
                    self._follow(client, resource, ns, handler, listed.resource_version)
                )
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(
        self,
        client: Client,
        resource: Resource,
        ns: str | None,
        handler: Callable[[dict[str, Any], float], None],
        version: str,
    ) -> None:
        while True:
            try:
                async for event in client.watch(resource, namespace=ns, resource_version=version):
                    version = event.object["metadata"]["resourceVersion"]
                    if event.type in ("ADDED", "MODIFIED"):
                        handler(event.object, time.monotonic())
                    elif event.type == "DELETED" and resource is REMEDIATIONS:
                        self.seen.remediations.pop(event.object["metadata"]["name"], None)
            except Gone:
                listed = await client.list(resource, namespace=ns, limit=2000)
                for obj in listed.items:
                    handler(obj, time.monotonic())
                version = listed.resource_version
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(1)

    def _fault(self, obj: dict[str, Any], at: float) -> None:
        name = obj["spec"]["machineRef"]["name"]
        was = (self.seen.faults.get(name) or {}).get("status", {}).get("state")
        self.seen.faults[name] = obj
        if (obj.get("status") or {}).get("state") == "Active" and was != "Active":
            self.seen.active_at[name] = at
        self.seen.changed.set()

    def _remediation(self, obj: dict[str, Any], at: float) -> None:
        self.seen.remediations[obj["metadata"]["name"]] = obj
        self.seen.changed.set()

    def _policy(self, obj: dict[str, Any], at: float) -> None:
        if obj["metadata"]["name"] != POLICY:
            return
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c["type"] == "StormStopped":
                if c["status"] == "True" and self.seen.storm_stopped_at is None:
                    self.seen.storm_stopped_at = at
                elif c["status"] != "True":
                    self.seen.storm_stopped_at = None
        self.seen.changed.set()

    def _node(self, obj: dict[str, Any], at: float) -> None:
        name = obj["metadata"]["name"]
        now = bool((obj.get("spec") or {}).get("unschedulable"))
        if now and not self.seen.unschedulable.get(name):
            self.seen.cordoned_at[name] = at
        self.seen.unschedulable[name] = now
        self.seen.changed.set()

    async def until(self, check: Callable[[], bool], what: str, limit: float) -> float:
        """Seconds until ``check`` holds, re-checked on every watch event (and each second)."""
        started = time.monotonic()
        while not check():
            left = started + limit - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what}: not within {limit:.0f} s")
            self.seen.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.seen.changed.wait(), min(left, 1.0))
        return time.monotonic() - started


def remediation_name(node: str) -> str:
    return f"{node}.{FAULT.lower()}"


def earlier(seen: Seen, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The metadata of each node's remediation as it is now: one made before a round (an
    earlier size's, or a storm's) is not that round's."""
    return {
        n: (seen.remediations.get(remediation_name(n)) or {}).get("metadata", {}) for n in names
    }


def phase(obj: dict[str, Any] | None) -> str | None:
    return ((obj or {}).get("status") or {}).get("phase")


def repair_started(obj: dict[str, Any] | None) -> bool:
    return bool(((obj or {}).get("status") or {}).get("attempts"))


async def grow(meta: Client, business: Business, first: int, count: int) -> float:
    """Machines ``first`` to ``count - 1`` and their Nodes, joined; seconds until every Node is
    Ready (KWOK)."""
    started = time.monotonic()
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        name = name_of(i)
        address = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        body: dict[str, Any] = {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "clusterRef": {"name": cluster_name(i, len(business.clients))},
                "executor": "sim",
                "address": address,
                "packageVersion": "bench-v1",
            },
        }
        async with sem:
            await retried(lambda: create_if_missing(meta, MACHINES, body))
            status = {"nodeName": name, "phase": "Running", "packageVersion": "bench-v1"}
            await retried(
                lambda: meta.patch(
                    MACHINES, name, {"status": status}, namespace=NS, subresource="status"
                )
            )
            registration = Registration(name, f"{NS}/{name}", address, labels={ZONE: zone_of(i)})
            client = business.of(name)
            await retried(lambda: KwokKubelet().register(client, registration))

    await asyncio.gather(*(one(i) for i in range(first, count)))
    created = time.monotonic() - started
    while True:
        nodes = [n for b in business.clients for n in (await b.list(NODES, limit=2000)).items]
        ready = sum(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (n.get("status") or {}).get("conditions") or []
            )
            for n in nodes
        )
        print(f"  {time.monotonic() - started:6.0f} s: {ready}/{count} Nodes Ready", flush=True)
        if ready >= count:
            break
        if time.monotonic() - started > 900 + created:
            raise TimeoutError(f"only {ready} of {count} Nodes Ready")
        await asyncio.sleep(5)
    return time.monotonic() - started


async def create_if_missing(client: Client, resource: Resource, body: dict[str, Any]) -> None:
    with contextlib.suppress(AlreadyExists):
        await client.create(resource, body)


def requests_total(made: Counter[str]) -> int:
    return sum(v for k, v in made.items() if not k.startswith(TIMES))


def where_time_went(before: Counter[str], after: Counter[str]) -> dict[str, Any]:
    """Between two samples: the mean API request's duration, and the mean wait of a key in
    each controller's work queue (the controllers that had keys)."""
    delta = after - before
    queued = {k.removeprefix(QUEUE_COUNT): v for k, v in delta.items() if k.startswith(QUEUE_COUNT)}
    return {
        "api_request_ms_mean": round(delta[API_MS] / delta[API_COUNT], 1)
        if delta[API_COUNT]
        else None,
        "queue_wait_seconds_mean": {
            name: round(delta[QUEUE_MS + name] / count / 1000, 3)
            for name, count in sorted(queued.items())
            if count
        },
    }


@dataclass
class Operator:
    pid: int
    port: int
    hosts: dict[str, str]

    def sample(self) -> tuple[float, float, float, Counter[str]]:
        """CPU seconds, RSS and peak RSS (MiB), API requests made so far (by cluster and
        method)."""
        cpu, rss, peak = proc_stats(self.pid)
        return cpu, rss, peak, requests_made(self.port, self.hosts)


async def idle(op: Operator, seconds: float) -> dict[str, float]:
    cpu0, _, _, req0 = op.sample()
    await asyncio.sleep(seconds)
    cpu1, rss, _, req1 = op.sample()
    return {
        "idle_seconds": seconds,
        "idle_mcpu": round((cpu1 - cpu0) / seconds * 1000, 1),
        "idle_api_requests_per_second": round(
            (requests_total(req1) - requests_total(req0)) / seconds, 2
        ),
        "rss_mib_idle": round(rss, 1),
    }


async def write_all(business: Business, nodes: Iterable[int], status: str) -> dict[str, float]:
    """Report the fault's ``status`` on every node at once; when each write started."""
    sem = asyncio.Semaphore(64)
    written: dict[str, float] = {}

    async def one(i: int) -> None:
        async with sem:
            written[name_of(i)] = time.monotonic()
            await report(business, name_of(i), status)

    await asyncio.gather(*(one(i) for i in nodes))
    return written


async def heal(
    watches: Watches,
    business: Business,
    op: Operator,
    nodes: list[int],
    idle_rate: float,
    limit: float,
) -> dict[str, Any]:
    """Fail ``nodes``, play their recovery once each repair has run, and time the loop."""
    seen = watches.seen
    names = [name_of(i) for i in nodes]
    # Earlier remediations of the same nodes (an earlier size) are not this round's.
    before = earlier(seen, names)
    for n in names:
        seen.active_at.pop(n, None)
        seen.cordoned_at.pop(n, None)
    cpu0, _, _, req0 = op.sample()
    started = time.monotonic()
    written = await write_all(business, nodes, "True")
    recovered: set[str] = set()
    done_at: dict[str, float] = {}
    clearing: set[asyncio.Task[None]] = set()

    def current(n: str) -> dict[str, Any] | None:
        obj = seen.remediations.get(remediation_name(n))
        if obj is None or obj["metadata"].get("uid") == before[n].get("uid"):
            return None
        return obj

    def progress() -> bool:
        now = time.monotonic()
        for n in names:
            obj = current(n)
            if n not in recovered and repair_started(obj):
                recovered.add(n)
                task = asyncio.create_task(report(business, n, "False"))
                clearing.add(task)
                task.add_done_callback(clearing.discard)
            if n not in done_at and phase(obj) in ("Succeeded", "Escalated"):
                done_at[n] = now
        return len(done_at) == len(names)

    try:
        await watches.until(progress, f"{len(names)} remediations done", limit)
    finally:
        await asyncio.gather(*clearing, return_exceptions=True)
    elapsed = time.monotonic() - started
    cpu1, rss, peak, req1 = op.sample()
    escalated = [n for n in names if phase(current(n)) == "Escalated"]
    detection = [seen.active_at[n] - written[n] for n in names if n in seen.active_at]
    cordon = [seen.cordoned_at[n] - written[n] for n in names if n in seen.cordoned_at]
    to_cordon = [
        seen.cordoned_at[n] - seen.active_at[n]
        for n in names
        if n in seen.cordoned_at and n in seen.active_at
    ]
    done = [done_at[n] - written[n] for n in names]
    requests = requests_total(req1) - requests_total(req0)
    by_kind = {
        k: round(v / len(names), 2)
        for k, v in sorted((req1 - req0).items())
        if v and not k.startswith(TIMES)
    }
    window = max(done_at.values()) - min(written.values())
    return {
        "faults": len(names),
        "samples": {
            "detection": [round(v, 3) for v in detection],
            "cordon": [round(v, 3) for v in cordon],
            "detection_to_cordon": [round(v, 3) for v in to_cordon],
            "done": [round(v, 3) for v in done],
        },
        "detection_seconds": stats.percentiles(detection),
        "cordon_seconds": stats.percentiles(cordon),
        "detection_to_cordon_seconds": stats.percentiles(to_cordon),
        "done_seconds": stats.percentiles(done),
        "escalated": len(escalated),
        "round_seconds": round(elapsed, 2),
        "remediations_per_minute": round(len(names) / window * 60, 1),
        "api_requests_per_remediation": round(requests / len(names), 2),
        "api_requests_per_remediation_by_cluster_and_method": by_kind,
        "api_requests_per_remediation_above_idle": round(
            (requests - idle_rate * elapsed) / len(names), 2
        ),
        "busy_mcpu": round((cpu1 - cpu0) / elapsed * 1000, 1),
        "rate_limiter_wait_seconds_per_remediation": round(
            (req1[WAITED] - req0[WAITED]) / 1000 / len(names), 3
        ),
        **where_time_went(req0, req1),
        "rss_mib_after": round(rss, 1),
        "peak_rss_mib": round(peak, 1),
    }


async def storm(
    watches: Watches, business: Business, size: int, hold: float, limit: float
) -> dict[str, Any]:
    """Fail 40 % of one zone; the time to StormStopped, and what started regardless."""
    seen = watches.seen
    nodes, zone_size = storm_nodes(size, len(business.clients))
    names = [name_of(i) for i in nodes]
    before = earlier(seen, names)
    seen.storm_stopped_at = None
    for n in names:
        seen.active_at.pop(n, None)
        seen.cordoned_at.pop(n, None)

    def current(n: str) -> dict[str, Any] | None:
        obj = seen.remediations.get(remediation_name(n))
        if obj is None or obj["metadata"].get("uid") == before[n].get("uid"):
            return None
        return obj

    written = await write_all(business, nodes, "True")
    first = min(written.values())
    result: dict[str, Any] = {
        "zone_nodes": zone_size,
        "failing": len(names),
        "min_healthy_percent": MIN_HEALTHY,
        "writes_seconds": round(max(written.values()) - first, 2),
    }
    try:
        await watches.until(lambda: seen.storm_stopped_at is not None, "StormStopped", limit)
        result["stop_seconds"] = round((seen.storm_stopped_at or first) - first, 3)
        # The remediations are made and held; wait for all of them, then a while longer.
        await watches.until(
            lambda: all(current(n) is not None for n in names), "storm remediations", limit
        )
        await asyncio.sleep(hold)
    except TimeoutError as e:
        result["stop_seconds"] = None
        result["error"] = str(e)
    result["hold_seconds"] = hold
    result["remediations"] = sum(current(n) is not None for n in names)
    result["cordoned"] = sum(
        bool(((current(n) or {}).get("status") or {}).get("cordoned")) for n in names
    )
    result["left_pending"] = sum(phase(current(n)) == "Pending" for n in names)
    result["repairs_started"] = sum(repair_started(current(n)) for n in names)
    result["nodes_unschedulable"] = sum(seen.unschedulable.get(n, False) for n in names)
    # When the zone fell below its minimum as the hub saw it: the fault that takes the healthy
    # share below minHealthyPercent. Remediations admitted before that were within the limit.
    due = math.floor(zone_size * (100 - MIN_HEALTHY) / 100) + 1
    detected = sorted(seen.active_at[n] - first for n in names if n in seen.active_at)
    cordons = sorted(seen.cordoned_at[n] - first for n in names if n in seen.cordoned_at)
    result["detection_seconds"] = stats.percentiles(
        [seen.active_at[n] - written[n] for n in names if n in seen.active_at]
    )
    result["all_detected_seconds"] = round(detected[-1], 3) if detected else None
    result["below_min_at_fault"] = due
    result["below_min_seconds"] = round(detected[due - 1], 3) if len(detected) >= due else None
    result["cordon_seconds_after_first_write"] = [round(c, 3) for c in cordons]
    # Over: the nodes recover by themselves; every held remediation ends without a repair.
    await write_all(business, nodes, "False")
    result["recovered_seconds"] = round(
        await watches.until(
            lambda: all(
                current(n) is None or phase(current(n)) in ("Succeeded", "Escalated") for n in names
            ),
            "storm remediations ended",
            limit,
        ),
        1,
    )
    try:
        await watches.until(lambda: seen.storm_stopped_at is None, "StormStopped False", 120)
        result["stop_lifted"] = True
    except TimeoutError:
        result["stop_lifted"] = False
    return result


def record(
    kubernetes: str, args: argparse.Namespace, steps: list[dict[str, Any]]
) -> dict[str, Any]:
    """The result so far: written after every size, so a run cut short (a size that does not
    fit in the time, an interrupt) keeps the sizes it finished and says which are missing."""
    return {
        "kubernetes": kubernetes,
        "meaning": MEANING,
        "operator_flags": [*OPERATOR_FLAGS, *args.operator_args],
        "zones": ZONES,
        "failing_share": FAILING_SHARE,
        "storm_share_of_zone": STORM_SHARE,
        "healing_rounds_per_size": args.rounds,
        "business_clusters": args.clusters,
        "operator_defaults": operator_defaults(),
        "sizes_asked": args.nodes,
        "sizes_missing": [n for n in args.nodes if n not in {s["nodes"] for s in steps}],
        "steps": steps,
        "operator_rss_mib_per_node": stats.slope(
            [(s["nodes"], s["idle"]["rss_mib_idle"]) for s in steps]
        ),
    }


def operator_defaults() -> dict[str, Any]:
    """The operator's settings this code runs with when no flag changes them (read from its
    command line, so the record follows the code)."""
    from kokpit.cli.main import parser as kokpit_parser

    args = kokpit_parser().parse_args(["operator", "remediation"])
    return {
        k: getattr(args, k)
        for k in ("workers", "qps", "cluster_qps", "probe_period", "admission_delay")
    }


def save(result: dict[str, Any], args: argparse.Namespace) -> Path:
    """Write the result; its plots only for the result the docs quote (``bench.plot`` draws
    them from ``healing.json``), so a run under another name leaves them alone."""
    path = machine_info.write(args.name, result, quick=args.quick)
    if args.name == "healing":
        plot.healing(result, path.parent / "plots")
    return path


async def run(args: argparse.Namespace) -> dict[str, Any]:
    assets = ensure_assets(release(None))
    steps: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-healing-") as tmp:
        meta = LocalCluster(Path(tmp) / "meta")
        meta.up(assets, progress=lambda _: None)
        kubectl = Kubectl(assets.bin("kubectl"), meta.kubeconfig)
        kubectl.apply([crd(k) for k in KINDS] + [namespace(NS)])
        kubectl.wait_established(*(f"{k.plural}.{k.group}" for k in KINDS))
        process: subprocess.Popen[bytes] | None = None
        try:
            with business_clusters(
                kubectl,
                assets,
                meta.kubeconfig,
                Path(tmp) / "biz",
                NS,
                [f"biz-{k}" for k in range(args.clusters)],
                lease_seconds=LEASE_SECONDS,
            ) as clusters:
                port = free_port()
                meta_config = ClientConfig.from_kubeconfig(meta.kubeconfig, qps=2000, burst=4000)
                biz_configs = [
                    ClientConfig.from_kubeconfig(biz.kubeconfig, qps=1000, burst=2000)
                    for biz in clusters
                ]
                log = Path(args.log_dir or tmp) / "remediation-operator.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                with log.open("wb") as out:
                    process = subprocess.Popen(
                        [
                            *(sys.executable, "-m", "kokpit", "operator", "remediation"),
                            *("--kubeconfig", str(meta.kubeconfig)),
                            *("--health-port", str(port), *OPERATOR_FLAGS),
                            *args.operator_args,
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                hosts = {urlsplit(meta_config.server).netloc: "meta"}
                hosts.update({urlsplit(c.server).netloc: "business" for c in biz_configs})
                op = Operator(process.pid, port, hosts)
                async with contextlib.AsyncExitStack() as stack:
                    client = await stack.enter_async_context(Client(meta_config))
                    business = Business(
                        [await stack.enter_async_context(Client(c)) for c in biz_configs]
                    )
                    await client.create(MACHINE_PACKAGE_VERSIONS, package_version())
                    await client.create(REMEDIATION_POLICIES, policy())
                    async with Watches(client, business) as watches:
                        made = 0
                        for index, size in enumerate(args.nodes):
                            step = await one_size(
                                watches, client, business, op, index, made, size, args
                            )
                            steps.append(step)
                            made = size
                            save(record(assets.kubernetes_version, args, steps), args)
        finally:
            if process is not None:
                process.terminate()
                process.wait(30)
            meta.down()
    return record(assets.kubernetes_version, args, steps)


async def one_size(
    watches: Watches,
    client: Client,
    business: Business,
    op: Operator,
    index: int,
    made: int,
    size: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    print(f"{size} nodes: joining {size - made}", flush=True)
    joined = await grow(client, business, made, size)
    await asyncio.sleep(args.settle)  # the hub has seen every Machine and probed most
    active = [
        n for n, f in watches.seen.faults.items() if f.get("status", {}).get("state") == "Active"
    ]
    quiet = await idle(op, args.idle)
    print(f"  idle: {quiet}", flush=True)
    rounds = []
    for r in range(args.rounds):
        rounds.append(
            await heal(
                watches,
                business,
                op,
                failing(size, index * args.rounds + r),
                quiet["idle_api_requests_per_second"],
                args.timeout,
            )
        )
        shown = {k: v for k, v in rounds[-1].items() if k != "samples"}
        print(f"  healing {r + 1}/{args.rounds}: {shown}", flush=True)
        await asyncio.sleep(args.pause)
    healing = summarize_rounds(rounds)
    stormed = await storm(watches, business, size, args.storm_hold, args.timeout)
    print(f"  storm: {stormed}", flush=True)
    return {
        "nodes": size,
        "joined_seconds": round(joined, 1),
        "faults_active_before": len(active),
        "idle": quiet,
        "healing": healing,
        "healing_rounds": rounds,
        "storm": stormed,
    }


def summarize_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one size in one record: the latency percentiles over every fault of every
    round, and each per-round figure as the median of the rounds with its spread."""
    flat = [
        {k: v for k, v in r.items() if isinstance(v, int | float) and k != "faults"} for r in rounds
    ]
    summary: dict[str, Any] = {
        "rounds": len(rounds),
        "faults": sum(r["faults"] for r in rounds),
    }
    for key in ("detection", "cordon", "detection_to_cordon", "done"):
        summary[f"{key}_seconds"] = stats.percentiles(
            [v for r in rounds for v in r["samples"][key]]
        )
    for key, spread in stats.summarize(flat).items():
        summary[key] = spread["median"]
        summary[f"{key}_spread"] = spread
    return summary


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--nodes",
        type=machine_info.ints,
        default=[1_000, 3_000, 10_000],
        help="node counts to grow through",
    )
    parser.add_argument(
        "--clusters",
        type=int,
        default=CLUSTERS,
        help="business clusters the nodes are spread over (each its own control plane)",
    )
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after joining")
    parser.add_argument("--idle", type=float, default=30.0, help="idle seconds measured")
    parser.add_argument("--rounds", type=int, default=3, help="healing rounds per size")
    parser.add_argument("--pause", type=float, default=5.0, help="seconds between rounds")
    parser.add_argument(
        "--storm-hold", type=float, default=15.0, help="seconds the storm is held after the stop"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="per wait")
    parser.add_argument("--log-dir", default=None, help="keep the operator's log here")
    parser.add_argument(
        "--operator-args",
        type=str.split,
        default=[],
        help='more flags for the operator, as one string ("--qps 1000"); recorded in the result',
    )
    parser.add_argument(
        "--name",
        default="healing",
        help="the result's name (bench/results/NAME.json): a run with other operator flags "
        "is written beside the one the docs quote, not over it",
    )
    args = machine_info.parse_args(
        parser, quick={"nodes": [100, 200, 400], "settle": 10.0, "idle": 10.0, "storm_hold": 5.0}
    )
    result = asyncio.run(run(args))
    print(f"wrote {save(result, args)}")


if __name__ == "__main__":
    main()
