"""How the Cluster-Operator learns, within seconds, that a Ready control plane broke.

Without these, a Ready Cluster is looked at again only at its resync (minutes). Two event
sources (:class:`~kokpit.runtime.controller.EventSource`), each a runnable that needs the
leader, enqueue the Cluster whose control plane changed:

- :class:`ProbeMonitor`, for runtimes whose components nothing else watches (``process``):
  probes each Ready Cluster's components every ``probe_interval``, the Clusters spread evenly
  over the interval and at most ``probe_concurrency`` probed at a time, so thousands of
  clusters never probe at once (and when probes are slow, rounds stretch rather than pile
  up). A dead process is reported at once; one that fails its health check after
  ``probe_failure_threshold`` failures in a row.
- :class:`WorkloadWatch`, for the ``kubernetes`` runtime: informers on the Deployments and
  StatefulSets labelled ``kokpit.io/cluster``, one pair per namespace that holds such a
  Cluster (the operator may list and watch workloads only where it is bound), mapped to the
  controlling Cluster: a pod going unready changes its workload's status, which re-reconciles
  the Cluster at once.

Neither decides anything: the reconcile reads health again and acts (:mod:`.health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping

from kokpit.api.conditions import READY, is_true
from kokpit.controllers.cluster.options import ClusterOptions
from kokpit.providers.controlplane import (
    NOT_RUNNING,
    ORDER,
    ControlPlane,
    ControlPlaneRuntime,
)
from kokpit.runtime import Client, for_owner
from kokpit.runtime.client import Object
from kokpit.runtime.informer import EventHandler, Informer, Scope
from kokpit.runtime.log import get_logger
from kokpit.runtime.resources import DEPLOYMENTS, STATEFULSETS

CLUSTER_LABEL = "kokpit.io/cluster"


def _reference(namespace: str, name: str) -> Object:
    """What a source hands the controller's ``for_object`` mapper: the Cluster to reconcile."""
    return {"metadata": {"namespace": namespace, "name": name}}


class ProbeMonitor:
    """Probes the components of Ready Clusters of ``runtimes`` (by ``spec.runtime``)."""

    needs_leader = True

    def __init__(
        self,
        clusters: Informer,
        runtimes: Mapping[str, ControlPlaneRuntime],
        options: ClusterOptions,
    ) -> None:
        self._clusters = clusters
        self._runtimes = runtimes
        self._options = options
        self._handlers: list[EventHandler] = []
        #: Failed probes in a row, by (Cluster uid, component), of components that run.
        self._failures: dict[tuple[str, str], int] = {}
        self._log = get_logger("kokpit.cluster.probes")

    def add_handler(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    async def wait_synced(self) -> None:
        await self._clusters.wait_synced()

    def watched(self, cluster: Object) -> bool:
        """Ready Clusters only: any other is being changed or repaired, and its reconcile
        looks at it again by itself."""
        return (
            (cluster.get("spec") or {}).get("runtime") in self._runtimes
            and not cluster["metadata"].get("deletionTimestamp")
            and is_true((cluster.get("status") or {}).get("conditions") or [], READY)
        )

    async def start(self) -> None:
        await self._clusters.wait_synced()
        options = self._options
        slots = asyncio.Semaphore(max(1, options.probe_concurrency))
        running: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        try:
            while True:
                began = loop.time()
                due = sorted(
                    (c for c in self._clusters.store.list() if self.watched(c)),
                    key=lambda c: _spread(c["metadata"]["uid"]),
                )
                uids = {c["metadata"]["uid"] for c in due}
                self._failures = {k: v for k, v in self._failures.items() if k[0] in uids}
                for i, cluster in enumerate(due):
                    await asyncio.sleep(
                        max(0.0, began + options.probe_interval * i / len(due) - loop.time())
                    )
                    await slots.acquire()
                    task = loop.create_task(self._probe(cluster, slots), name="cluster-probe")
                    running.add(task)
                    task.add_done_callback(running.discard)
                await asyncio.sleep(max(0.0, began + options.probe_interval - loop.time()))
        finally:
            for task in list(running):
                task.cancel()
            for task in list(running):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _probe(self, cluster: Object, slots: asyncio.Semaphore) -> None:
        meta = cluster["metadata"]
        try:
            runtime = self._runtimes[cluster["spec"]["runtime"]]
            cp = ControlPlane(meta["namespace"], meta["name"], meta["uid"])
            for name in ORDER:
                health = await runtime.health(cp, name)
                key = (meta["uid"], name)
                if health.ready:
                    self._failures.pop(key, None)
                    continue
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                if (
                    health.reason == NOT_RUNNING
                    or failures >= self._options.probe_failure_threshold
                ):
                    self._failures.pop(key, None)
                    self._log.info(
                        "component not ready; reconciling its Cluster",
                        extra={
                            "key": f"{meta['namespace']}/{meta['name']}",
                            "component": name,
                            "detail": health.detail,
                        },
                    )
                    for handler in self._handlers:
                        handler.on_add(_reference(meta["namespace"], meta["name"]))
                    return
        except Exception as e:  # one cluster's failed probe must not stop the others'
            self._log.warning(
                "probe failed",
                extra={"key": f"{meta['namespace']}/{meta['name']}", "error": repr(e)},
            )
        finally:
            slots.release()


def _spread(uid: str) -> str:
    """A stable order that mixes namespaces and names: each Cluster keeps its slot in the
    interval from round to round."""
    return hashlib.sha256(uid.encode()).hexdigest()


class WorkloadWatch:
    """Enqueues the controlling Cluster of every change to a control-plane workload of the
    ``kubernetes`` runtime."""

    needs_leader = True

    def __init__(self, client: Client, clusters: Informer, runtime: str = "kubernetes") -> None:
        self._client = client
        self._clusters = clusters
        self._runtime = runtime
        self._handlers: list[EventHandler] = []
        self._namespaces: dict[str, list[asyncio.Task[None]]] = {}
        self._owner = for_owner("Cluster", "kokpit.io")
        self._running = False
        self._subscribed = False

    def add_handler(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    async def wait_synced(self) -> None:
        await self._clusters.wait_synced()

    async def start(self) -> None:
        self._running = True
        if not self._subscribed:  # once: an informer keeps its handlers across leader terms
            self._subscribed = True
            self._clusters.add_handler(_ClusterEvents(self))
        else:
            for cluster in self._clusters.store.list():
                self.cluster_changed(cluster)
        try:
            await asyncio.Event().wait()
        finally:
            self._running = False
            tasks = [t for ts in self._namespaces.values() for t in ts]
            self._namespaces = {}
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def cluster_changed(self, cluster: Object) -> None:
        namespace = cluster["metadata"].get("namespace") or ""
        if (cluster.get("spec") or {}).get("runtime", "kubernetes") != self._runtime:
            return
        if not self._running or namespace in self._namespaces:
            return
        tasks = []
        for resource in (DEPLOYMENTS, STATEFULSETS):
            scope = Scope(resource, namespace, label_selector=CLUSTER_LABEL)
            informer = Informer(self._client, scope)
            informer.add_handler(_WorkloadEvents(self))
            task = asyncio.get_running_loop().create_task(
                informer.start(), name=f"cluster-workloads-{namespace}-{resource}"
            )
            tasks.append(task)
        self._namespaces[namespace] = tasks

    def cluster_deleted(self, cluster: Object) -> None:
        """The namespace's informers stop with its last Cluster of this runtime."""
        namespace = cluster["metadata"].get("namespace") or ""
        uid = cluster["metadata"].get("uid")
        left = [
            c
            for c in self._clusters.store.list()
            if c["metadata"].get("namespace") == namespace
            and c["metadata"].get("uid") != uid
            and (c.get("spec") or {}).get("runtime", "kubernetes") == self._runtime
        ]
        if not left:
            for task in self._namespaces.pop(namespace, []):
                task.cancel()

    def workload_changed(self, workload: Object) -> None:
        for request in self._owner(workload):
            for handler in self._handlers:
                handler.on_add(_reference(request.namespace, request.name))


class _ClusterEvents:
    def __init__(self, watch: WorkloadWatch) -> None:
        self._watch = watch

    def on_add(self, obj: Object) -> None:
        self._watch.cluster_changed(obj)

    def on_update(self, old: Object, new: Object) -> None:
        self._watch.cluster_changed(new)

    def on_delete(self, obj: Object) -> None:
        self._watch.cluster_deleted(obj)


class _WorkloadEvents:
    def __init__(self, watch: WorkloadWatch) -> None:
        self._watch = watch

    def on_add(self, obj: Object) -> None:
        self._watch.workload_changed(obj)

    def on_update(self, old: Object, new: Object) -> None:
        self._watch.workload_changed(new)

    def on_delete(self, obj: Object) -> None:
        self._watch.workload_changed(obj)
