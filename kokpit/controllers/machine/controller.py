"""The Machine-Operator: keeps each host at its MachinePackageVersion, joins it to its
business cluster as a Node, and gates the node on its readiness gates.

Watches Machines, MachinePackageVersions and Clusters (each mapped to the Machines that name
it, through an index), and the Condition ConfigMaps (label-selected; each maps to the Machine
of the same name). Reconcile:

    cache get (gone → done) → deleting? drain, remove packages, delete node → finalizer →
    package version → packages (check, change, verify, check) → node (join, gate) →
    conditions → one status patch → events.

What the operator remembers in memory (when it last checked a host's packages, what it last
published on a node) only saves work: a restarted operator checks and publishes again.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kokpit.controllers.cluster import CLUSTERS
from kokpit.controllers.machine import gates, phases, status
from kokpit.controllers.machine.clusters import ClusterClients
from kokpit.controllers.machine.scope import MachineScope
from kokpit.providers.machine import Executor, HostError
from kokpit.providers.machine.kubelet import KwokKubelet
from kokpit.runtime import (
    Controller,
    ControllerOptions,
    EventRecorder,
    Informer,
    Manager,
    PatchHelper,
    Request,
    Resource,
    Result,
    by_field,
)
from kokpit.runtime.resources import CONFIGMAPS

MACHINES = Resource("kokpit.io", "v1alpha1", "machines", "Machine")
PACKAGE_VERSIONS = Resource(
    "kokpit.io", "v1alpha1", "machinepackageversions", "MachinePackageVersion", namespaced=False
)
FINALIZER = "kokpit.io/machine"
BY_PACKAGE = "spec.packageVersion"
BY_CLUSTER = "spec.clusterRef.name"


@dataclass(frozen=True)
class MachineOptions:
    #: How often a Running machine's packages are checked again (drift).
    recheck_interval: float = 600.0
    #: Waiting for something outside (a Secret, the business cluster).
    retry_interval: float = 10.0
    #: Failed steps and unreachable hosts back off from ``min_backoff`` to ``max_backoff``.
    min_backoff: float = 2.0
    max_backoff: float = 300.0
    drain_poll_interval: float = 2.0
    field_manager: str = "kokpit-machine-operator"
    #: The field manager of the node conditions published from the Condition ConfigMaps.
    gates_field_manager: str = "kokpit-readiness-gates"
    max_concurrent_reconciles: int = 16
    #: Rate limit of the clients of business clusters.
    cluster_qps: float = 50.0
    cluster_burst: int = 100


class MachineReconciler:
    def __init__(
        self,
        manager: Manager,
        executors: Mapping[str, Executor],
        recorder: EventRecorder,
        options: MachineOptions,
    ) -> None:
        self.client = manager.client
        self.executors = executors
        self.recorder = recorder
        self.options = options
        self.kubelet = KwokKubelet()
        self.machines = manager.cache.informer(MACHINES)
        self.package_versions = manager.cache.informer(PACKAGE_VERSIONS)
        clusters = manager.cache.informer(CLUSTERS)
        self.cluster_informer = clusters
        self.condition_configmaps: Informer = manager.cache.informer(
            CONFIGMAPS, label_selector=f"{gates.LABEL}=true"
        )
        self.clusters = ClusterClients(
            self.client, clusters, qps=options.cluster_qps, burst=options.cluster_burst
        )
        self._helpers: dict[str, PatchHelper] = {}
        # Work savers, keyed by Machine uid (see the module docstring).
        self._checked: dict[str, tuple[int, str, float]] = {}
        self._published: dict[str, tuple[Any, float]] = {}
        self._failures: dict[str, int] = {}

    async def reconcile(self, request: Request) -> Result:
        cached = self.machines.store.get(request.key)
        if cached is None:
            return Result()
        machine = copy.deepcopy(cached)
        helper = PatchHelper(self.client, MACHINES, machine)
        self._helpers[request.key] = helper
        try:
            return await self._reconcile(MachineScope(machine), helper)
        finally:
            del self._helpers[request.key]

    async def _reconcile(self, scope: MachineScope, helper: PatchHelper) -> Result:
        meta = scope.machine["metadata"]
        finalizers: list[str] = meta.setdefault("finalizers", [])
        if meta.get("deletionTimestamp"):
            if FINALIZER not in finalizers:
                return Result()
            done = False
            try:
                await phases.reconcile_package_version(self, scope)
                done = await phases.reconcile_delete(self, scope)
            finally:
                await self._finish(scope, helper)
            if done:  # the status is written; now let the object go
                finalizers.remove(FINALIZER)
                await helper.patch(scope.machine)
                self._forget_all(scope)
            return Result(requeue_after=scope.requeue_after)
        if FINALIZER not in finalizers:
            finalizers.append(FINALIZER)
            await helper.patch(scope.machine)  # before the host or a node is touched
        try:
            for phase in (
                phases.reconcile_package_version,
                phases.reconcile_packages,
                phases.reconcile_node,
            ):
                if not await phase(self, scope):
                    break
            else:
                scope.requeue(self.options.recheck_interval)
        finally:
            await self._finish(scope, helper)
        return Result(requeue_after=scope.requeue_after)

    async def _finish(self, scope: MachineScope, helper: PatchHelper) -> None:
        """Conditions, one status patch, then the events."""
        status.update(scope)
        await helper.patch(scope.machine)
        for type_, reason, message in scope.events:
            await self.recorder.event(scope.machine, type_, reason, message)

    async def close(self) -> None:
        await self.clusters.close()

    async def write(self, scope: MachineScope) -> None:
        """Write the scope's object now (a step's intent, before the step runs)."""
        status.update(scope)
        await self._helpers[scope.key].patch(scope.machine)

    def executor_for(self, scope: MachineScope) -> Executor:
        name = scope.spec.get("executor", "ssh")
        executor = self.executors.get(name)
        if executor is None:
            raise NoExecutor(
                f"the {name} executor is not enabled in this operator; an admin enables it "
                f"by starting the Machine-Operator with --executors naming {name}"
            )
        return executor

    # -- what the operator remembers ---------------------------------------------------------

    def packages_due(self, scope: MachineScope) -> bool:
        """Run the checks unless this process checked the same spec recently and found it
        applied."""
        seen = self._checked.get(_uid(scope))
        return not (
            seen is not None
            and seen[:2] == (scope.machine["metadata"]["generation"], scope.spec["packageVersion"])
            and time.monotonic() - seen[2] < self.options.recheck_interval
        )

    def packages_checked(self, scope: MachineScope) -> None:
        meta = scope.machine["metadata"]
        self._checked[_uid(scope)] = (
            meta["generation"],
            scope.spec["packageVersion"],
            time.monotonic(),
        )

    def joined(self, scope: MachineScope) -> bool:
        """The node registered and its Condition ConfigMap exists (a node deleted behind our
        back is found when it is next read, and registered again)."""
        return bool(scope.status.get("nodeName")) and (
            self.condition_configmaps.store.get(scope.key) is not None
        )

    def published(self, scope: MachineScope, verdict: gates.Verdict) -> bool:
        """This process published this verdict on the node recently."""
        seen = self._published.get(_uid(scope))
        return (
            seen is not None
            and seen[0] == verdict
            and time.monotonic() - seen[1] < self.options.recheck_interval
        )

    def mark_published(self, scope: MachineScope, verdict: gates.Verdict) -> None:
        self._published[_uid(scope)] = (verdict, time.monotonic())

    def forget(self, scope: MachineScope) -> None:
        """The node is gone: register it again."""
        self._published.pop(_uid(scope), None)
        scope.status["nodeName"] = None

    def _forget_all(self, scope: MachineScope) -> None:
        uid = _uid(scope)
        self._checked.pop(uid, None)
        self._published.pop(uid, None)
        self._failures.pop(uid, None)

    def backoff(self, scope: MachineScope) -> float:
        failures = self._failures.get(_uid(scope), 0)
        self._failures[_uid(scope)] = failures + 1
        return float(min(self.options.max_backoff, self.options.min_backoff * 2**failures))

    def reset_backoff(self, scope: MachineScope) -> None:
        self._failures.pop(_uid(scope), None)


class NoExecutor(HostError):
    reason = "ExecutorNotEnabled"


def _uid(scope: MachineScope) -> str:
    return str(scope.machine["metadata"]["uid"])


def setup(
    manager: Manager,
    executors: Mapping[str, Executor],
    recorder: EventRecorder,
    options: MachineOptions | None = None,
) -> MachineReconciler:
    """Create the Machine-Operator's controller and its watches on ``manager``."""
    options = options or MachineOptions()
    reconciler = MachineReconciler(manager, executors, recorder, options)
    machines = reconciler.machines
    machines.add_indexers({BY_PACKAGE: by_field(BY_PACKAGE), BY_CLUSTER: by_field(BY_CLUSTER)})

    def machines_using(package: dict[str, Any]) -> list[Request]:
        return _requests(machines.store.by_index(BY_PACKAGE, package["metadata"]["name"]))

    def machines_of(cluster: dict[str, Any]) -> list[Request]:
        meta = cluster["metadata"]
        return _requests(
            m
            for m in machines.store.by_index(BY_CLUSTER, meta["name"])
            if m["metadata"]["namespace"] == meta["namespace"]
        )

    controller = Controller(
        "machine",
        reconciler,
        ControllerOptions(max_concurrent_reconciles=options.max_concurrent_reconciles),
    )
    controller.watch(machines, predicate=_spec_or_deletion_changed)
    controller.watch(reconciler.package_versions, machines_using)
    controller.watch(reconciler.cluster_informer, machines_of, _endpoint_changed)
    controller.watch(reconciler.condition_configmaps)  # same namespace and name as the Machine
    manager.add(controller)
    return reconciler


def _spec_or_deletion_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """A Machine's own status writes (several per reconcile) need no reconcile of their own;
    a new spec or a deletion does. Everything else comes back through requeues."""
    if old is None:
        return True
    before, after = old["metadata"], new["metadata"]
    return any(before.get(k) != after.get(k) for k in ("generation", "deletionTimestamp"))


def _endpoint_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Only a change of how to reach a business cluster concerns its Machines (a Cluster's
    status changes often; fanning each change out to thousands of Machines would not do)."""

    def reach(obj: dict[str, Any] | None) -> Any:
        status = (obj or {}).get("status") or {}
        return status.get("endpoint"), status.get("adminKubeconfigSecretRef")

    return old is None or reach(old) != reach(new)


def _requests(objs: Any) -> list[Request]:
    return [Request(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs]
