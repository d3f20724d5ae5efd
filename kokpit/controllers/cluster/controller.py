"""The Cluster-Operator: keeps each business cluster's control plane at its package version.

Watches Clusters and ClusterPackageVersions (a package version appearing or changing
requeues the Clusters that name it, found through an index, not a scan). The reconcile is the
runtime's outline (:mod:`kokpit.runtime.reconcile`) with these phases (:mod:`.phases`):

    normal:  package version → PKI → control plane, one component at a time (or the repair
             of a broken one, :mod:`.health`) → admin kubeconfig (people) → the
             Machine-Operator's own identity (:mod:`.access`) → the bootstrap token hosts'
             kubelets join with (:mod:`.bootstrap`)
    delete:  stop the control plane, delete what the Cluster owns

A Ready control plane that breaks re-reconciles its Cluster within seconds (:mod:`.watches`):
the process runtime's components are probed, the kubernetes runtime's workloads watched.
"""

from __future__ import annotations

from collections.abc import Mapping

from kokpit.api.v1alpha1 import CLUSTER_PACKAGE_VERSIONS, CLUSTERS
from kokpit.controllers.cluster import status
from kokpit.controllers.cluster.bootstrap import BootstrapTokens
from kokpit.controllers.cluster.options import ClusterOptions
from kokpit.controllers.cluster.phases import ClusterPhases, not_permitted
from kokpit.controllers.cluster.scope import ClusterScope
from kokpit.controllers.cluster.watches import ProbeMonitor, WorkloadWatch
from kokpit.providers.controlplane import ControlPlaneRuntime
from kokpit.providers.guard import Guard
from kokpit.runtime import (
    Controller,
    ControllerOptions,
    EventRecorder,
    Forbidden,
    Manager,
    ObjectReconciler,
    Outline,
    Phase,
    Request,
    by_field,
)
from kokpit.runtime.services import ServiceAddresses

FINALIZER = "kokpit.io/cluster"
#: The runtimes whose components are probed (nothing else tells when one dies).
PROBED = ("process",)
BY_PACKAGE = "spec.packageVersion"


def setup(
    manager: Manager,
    runtimes: Mapping[str, ControlPlaneRuntime],
    recorder: EventRecorder,
    options: ClusterOptions | None = None,
    guard: Guard | None = None,
) -> Controller:
    """Create the Cluster-Operator's controller and its watches on ``manager``; each step of
    an upgrade asks ``guard`` first (None: no step waits)."""
    options = options or ClusterOptions()
    clusters = manager.cache.informer(CLUSTERS)
    clusters.add_indexers({BY_PACKAGE: by_field(BY_PACKAGE)})
    packages = manager.cache.informer(CLUSTER_PACKAGE_VERSIONS)
    # Business API servers of the kubernetes runtime are Services of the meta-cluster.
    resolve = ServiceAddresses(manager.client)
    phases = ClusterPhases(manager.client, packages.store, runtimes, options, resolve, guard)
    tokens = BootstrapTokens(manager.client, options, resolve)

    def unless_forbidden(phase: Phase[ClusterScope]) -> Phase[ClusterScope]:
        """A write the operator may not make in a namespace is a condition naming the role to
        bind there, not a reconcile error retried for ever."""

        async def guarded(scope: ClusterScope) -> bool:
            try:
                return await phase(scope)
            except Forbidden:
                scope.blocked = ("Forbidden", not_permitted(scope.namespace))
                scope.requeue(options.failed_retry_interval)
                return False

        return guarded

    async def delete(scope: ClusterScope) -> bool:
        tokens.forget(scope.uid)
        try:
            return await phases.delete(scope)
        except Forbidden:
            # Its namespaced role is gone (deleting a namespace deletes its RoleBindings
            # first): what it made there is owned by the Cluster, and the garbage collector
            # removes it once the Cluster is gone.
            return True

    outline: Outline[ClusterScope] = Outline(
        resource=CLUSTERS,
        finalizer=FINALIZER,
        scope=ClusterScope,
        phases=tuple(
            unless_forbidden(phase)
            for phase in (
                phases.check_runtime,
                phases.resolve_package_version,
                phases.reconcile_pki,
                phases.reconcile_control_plane,
                phases.reconcile_admin_kubeconfig,
                phases.reconcile_operator_access,
                tokens.reconcile_bootstrap_token,
            )
        ),
        delete_phases=(delete,),
        update_status=status.update,
        paused=lambda scope: bool(scope.spec.get("paused")),
        resync_after=options.resync_interval,
    )
    reconciler = ObjectReconciler(manager.client, clusters.store, recorder, outline)

    def clusters_using(package: dict[str, object]) -> list[Request]:
        name = package["metadata"]["name"]  # type: ignore[index]
        return [
            Request(c["metadata"]["namespace"], c["metadata"]["name"])
            for c in clusters.store.by_index(BY_PACKAGE, str(name))
        ]

    controller = Controller(
        "cluster",
        reconciler,
        ControllerOptions(max_concurrent_reconciles=options.max_concurrent_reconciles),
    )
    controller.watch(clusters).watch(packages, clusters_using)
    probed = {name: runtimes[name] for name in PROBED if name in runtimes}
    if probed:
        monitor = ProbeMonitor(clusters, probed, options)
        controller.watch(monitor)
        manager.add(monitor)
    if "kubernetes" in runtimes:
        workloads = WorkloadWatch(manager.client, clusters)
        controller.watch(workloads)
        manager.add(workloads)
    manager.add(controller)
    return controller
