"""The fault hub: turns what the detectors see of each Machine into its NodeFault records.

Keyed by Machine. Watches the Machines (in service: joined, not being deleted), their
NodeFaults (a record deleted by hand is written again), and, in every business cluster through
the :class:`~kokpit.runtime.ClusterCache`, the Nodes (fault conditions and Ready) and the node
Leases of ``kube-node-lease``. The :class:`~.probe.Prober` probes each Machine's host on its
schedule and asks for a reconcile after each probe.

One reconcile of a Machine:

    detectors (:mod:`.detect`: node conditions, Ready, Lease; :mod:`.probe`: the last probe)
      → observations → each applied to its record (:mod:`.record`, written by :mod:`.hub`)
      → Cleared records past the retention deleted → come back at the earliest of: a grace
        running out, an Active record's lastSeen refresh, a Cleared record's expiry

Each fault type has exactly one detector, so two detectors never argue over one record; a
detector that cannot tell says nothing and the record stays as it is. The reconcile writes
nothing on the Machine (that is the Machine-Operator's) except Events: ``FaultDetected`` when a
fault turns Active, ``FaultCleared`` when it clears.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kokpit.api.v1alpha1 import MACHINE_PACKAGE_VERSIONS, MACHINES, NODE_FAULTS
from kokpit.api.v1alpha1.nodefault import FAULT_TYPES, fault_name
from kokpit.controllers.fault import detect
from kokpit.controllers.fault.hub import Hub
from kokpit.controllers.fault.metrics import ActiveFaults
from kokpit.controllers.fault.options import FaultOptions
from kokpit.controllers.fault.probe import Prober, in_service
from kokpit.controllers.fault.record import Where, expires_in, refresh_in
from kokpit.providers.machine import Executor
from kokpit.runtime import (
    ClusterCache,
    ClusterNotReady,
    Controller,
    ControllerOptions,
    EventRecorder,
    Invalid,
    Manager,
    Request,
    Result,
)
from kokpit.runtime.clustercache import ClusterMapper
from kokpit.runtime.log import get_logger
from kokpit.runtime.resources import LEASES, NODES
from kokpit.runtime.store import Store

Object = dict[str, Any]


class FaultHub:
    """The reconciler of the fault controller, with its prober."""

    def __init__(
        self,
        manager: Manager,
        cluster_cache: ClusterCache,
        executors: Mapping[str, Executor],
        recorder: EventRecorder,
        options: FaultOptions,
    ) -> None:
        cache = manager.cache
        self.machines = cache.informer(MACHINES)
        self.package_versions = cache.informer(MACHINE_PACKAGE_VERSIONS)
        self.faults = cache.informer(NODE_FAULTS)
        self.cluster_cache = cluster_cache
        self.options = options
        self.controller = Controller(
            "fault",
            self,
            ControllerOptions(max_concurrent_reconciles=options.max_concurrent_reconciles),
        )
        self.prober = Prober(
            manager.client,
            self.machines.store,
            self.package_versions.store,
            executors,
            options,
            self.controller.queue.add,
        )
        self._hub = Hub(manager.client, options.last_seen_interval)
        self._recorder = recorder
        self._log = get_logger("kokpit.fault")

    async def reconcile(self, request: Request) -> Result:
        machine = self.machines.store.get(request.key)
        if machine is None or not in_service(machine):
            await self.prober.forget(request)  # a deleted Machine's records go with it
            return Result()
        self.prober.track(request)
        now = datetime.now(UTC)
        findings = await self._detect(machine, now)
        where = Where(machine["spec"]["clusterRef"]["name"], machine["status"]["nodeName"])
        for observation in findings.observations:
            record = self._record(machine, observation.type)
            try:
                transition = await self._hub.report(machine, record, observation, where, now)
            except Invalid as e:  # a Machine whose name makes no valid record name
                self._recorder.event(machine, "Warning", "FaultNotRecorded", str(e))
                continue
            if transition.activated:
                message = f"{observation.type} ({observation.source}): {observation.message}"
                self._recorder.event(machine, "Warning", "FaultDetected", message)
            elif transition.cleared:
                message = f"{observation.type} cleared ({observation.source})"
                self._recorder.event(machine, "Normal", "FaultCleared", message)
        for type_ in FAULT_TYPES:
            record = self._record(machine, type_)
            if record is None:
                continue
            status = record.get("status") or {}
            due = expires_in(status, now, self.options.retention)
            if due is not None and due <= 0:
                await self._hub.delete(record)
                continue
            for seconds in (due, refresh_in(status, now, self.options.last_seen_interval)):
                if seconds is not None:
                    findings.recheck(seconds)
        return Result(requeue_after=findings.recheck_in)

    async def _detect(self, machine: Object, now: datetime) -> detect.Findings:
        """What the detectors see now: the business cluster's view of the node (nothing when
        it cannot be reached: unknown), and the Machine's last probe."""
        findings = detect.Findings()
        meta, node_name = machine["metadata"], machine["status"]["nodeName"]
        cluster_key = f"{meta['namespace']}/{machine['spec']['clusterRef']['name']}"
        try:
            cluster = await self.cluster_cache.get(cluster_key)
            nodes = cluster.informer(NODES, transform=detect.node_view)
            leases = cluster.informer(
                LEASES, namespace=detect.NODE_LEASE_NAMESPACE, transform=detect.lease_view
            )
        except ClusterNotReady as e:
            self._log.debug("business cluster not ready", extra={"cluster": cluster_key, "e": e})
        else:
            o = self.options
            if nodes.synced.is_set():
                node = nodes.store.get(node_name)
                findings.observations.extend(detect.node_conditions(node))
                detect.node_ready(node, now, o.not_ready_grace, findings)
            if leases.synced.is_set():
                lease = leases.store.get(f"{detect.NODE_LEASE_NAMESPACE}/{node_name}")
                detect.node_lease(lease, now, o.lease_grace, findings)
        report = self.prober.results.get(f"{meta['namespace']}/{meta['name']}")
        if report is not None:
            findings.observations.extend(report.observations)
        return findings

    def _record(self, machine: Object, fault_type: str) -> Object | None:
        meta = machine["metadata"]
        return self.faults.store.get(f"{meta['namespace']}/{fault_name(meta['name'], fault_type)}")


def setup(
    manager: Manager,
    cluster_cache: ClusterCache,
    executors: Mapping[str, Executor],
    recorder: EventRecorder,
    options: FaultOptions | None = None,
) -> FaultHub:
    """Create the fault controller, its prober and their watches on ``manager``; the
    business clusters are read through ``cluster_cache`` (the process's one cache, see
    :func:`kokpit.providers.controlplane.clients.business_clusters`)."""
    hub = FaultHub(manager, cluster_cache, executors, recorder, options or FaultOptions())
    controller = hub.controller
    controller.watch(hub.machines, predicate=_service_changed)
    controller.watch(hub.faults, _machine_of_fault, _created)
    mapper = _machine_for(hub.machines.store)
    controller.watch(
        hub.cluster_cache.watch(
            NODES, mapper, predicate=detect.conditions_changed, transform=detect.node_view
        )
    )
    controller.watch(
        hub.cluster_cache.watch(
            LEASES,
            mapper,
            namespace=detect.NODE_LEASE_NAMESPACE,
            predicate=detect.lease_revived(hub.options.lease_grace),
            transform=detect.lease_view,
        )
    )
    hub.faults.add_handler(ActiveFaults())
    manager.add(hub.prober)
    manager.add(controller)
    return hub


def _service_changed(old: Object | None, new: Object) -> bool:
    """A Machine joining, leaving, changing its spec or phase concerns the hub; its other
    status writes do not."""
    if old is None:
        return True

    def view(machine: Object) -> tuple[Any, ...]:
        status = machine.get("status") or {}
        meta = machine["metadata"]
        return (
            meta.get("generation"),
            meta.get("deletionTimestamp"),
            status.get("nodeName"),
            status.get("phase"),
        )

    return view(old) != view(new)


def _created(old: Object | None, new: Object) -> bool:
    """NodeFaults: their own status writes need no reconcile; a record created (or listed at
    start) or deleted (deletes always pass) does."""
    return old is None


def _machine_of_fault(fault: Object) -> list[Request]:
    meta = fault["metadata"]
    machine = ((fault.get("spec") or {}).get("machineRef") or {}).get("name")
    return [Request(meta["namespace"], machine)] if isinstance(machine, str) else []


def _machine_for(machines: Store) -> ClusterMapper:
    """A Node (or its Lease, of the same name) reconciles the Machine of that name in its
    Cluster's namespace, if that Machine joins this Cluster (not every node is a Machine's)."""

    def mapper(cluster_key: str, obj: Object) -> list[Request]:
        namespace, cluster = cluster_key.split("/", 1)
        name = obj["metadata"]["name"]
        machine = machines.get(f"{namespace}/{name}")
        if machine is None or machine["spec"].get("clusterRef", {}).get("name") != cluster:
            return []
        return [Request(namespace, name)]

    return mapper
