"""The Cluster-Operator: keeps each business cluster's control plane at its package version.

Watches Clusters and ClusterPackageVersions (a package version appearing or changing
requeues the Clusters that name it, found through an index, not a scan). Reconcile:

    cache get (gone → done) → deleting? delete phases → ensure finalizer → paused? →
    scope → phases (package version, PKI, control plane, admin kubeconfig) →
    conditions → one status patch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

from kokpit.controllers.cluster import phases, status
from kokpit.controllers.cluster.scope import ClusterScope
from kokpit.providers.controlplane import ControlPlaneRuntime, PlanError
from kokpit.runtime import (
    Client,
    Controller,
    ControllerOptions,
    EventRecorder,
    Forbidden,
    Informer,
    Manager,
    PatchHelper,
    Request,
    Resource,
    Result,
    by_field,
)

CLUSTERS = Resource("kokpit.io", "v1alpha1", "clusters", "Cluster")
PACKAGE_VERSIONS = Resource(
    "kokpit.io", "v1alpha1", "clusterpackageversions", "ClusterPackageVersion", namespaced=False
)
FINALIZER = "kokpit.io/cluster"
BY_PACKAGE = "spec.packageVersion"


@dataclass(frozen=True)
class ClusterOptions:
    #: How often to look at a control-plane step in progress.
    poll_interval: float = 1.0
    #: How often to retry a cluster whose control plane failed and could not roll back.
    failed_retry_interval: float = 30.0
    field_manager: str = "kokpit-cluster-operator"
    max_concurrent_reconciles: int = 8


class ClusterReconciler:
    def __init__(
        self,
        client: Client,
        clusters: Informer,
        packages: Informer,
        runtimes: Mapping[str, ControlPlaneRuntime],
        recorder: EventRecorder,
        options: ClusterOptions,
    ) -> None:
        self.client = client
        self.clusters = clusters
        self.packages = packages
        self.runtimes = runtimes
        self.recorder = recorder
        self.options = options
        self._helpers: dict[str, PatchHelper] = {}

    async def reconcile(self, request: Request) -> Result:
        cached = self.clusters.store.get(request.key)
        if cached is None:
            return Result()
        cluster = copy.deepcopy(cached)
        helper = PatchHelper(self.client, CLUSTERS, cluster)
        self._helpers[request.key] = helper
        try:
            return await self._reconcile(cluster, helper)
        finally:
            del self._helpers[request.key]

    async def _reconcile(self, cluster: dict[str, object], helper: PatchHelper) -> Result:
        meta = cluster["metadata"]
        assert isinstance(meta, dict)
        finalizers: list[str] = meta.setdefault("finalizers", [])
        scope = ClusterScope(cluster)
        if meta.get("deletionTimestamp"):
            if FINALIZER in finalizers:
                try:
                    await phases.reconcile_delete(self, scope)
                except PlanError as e:  # its runtime is off: say so, keep the finalizer
                    return await self._cannot_delete(scope, helper, e)
                except Forbidden:
                    # Its namespaced role is gone: deleting a namespace deletes its
                    # RoleBindings too. Everything it made there is owned by the Cluster,
                    # so the garbage collector removes it once the Cluster is gone.
                    pass
                finalizers.remove(FINALIZER)
                await helper.patch(cluster)
            return Result()
        if FINALIZER not in finalizers:
            finalizers.append(FINALIZER)
            await helper.patch(cluster)  # before anything is created that must be cleaned up
        if scope.spec.get("paused"):
            return Result()
        try:
            self.runtime_for(scope)  # before anything is made for a runtime that is off
            for phase in (
                phases.reconcile_package_version,
                phases.reconcile_pki,
                phases.reconcile_control_plane,
                phases.reconcile_admin_kubeconfig,
            ):
                if not await phase(self, scope):
                    break
        except PlanError as e:
            scope.blocked = (e.reason, str(e))
            await self.recorder.event(cluster, "Warning", e.reason, str(e))
            scope.requeue(self.options.failed_retry_interval)
        except Forbidden:
            scope.blocked = ("Forbidden", not_permitted(scope.cluster["metadata"]["namespace"]))
            scope.requeue(self.options.failed_retry_interval)
        finally:
            status.update(scope)
            await helper.patch(cluster)
        return Result(requeue_after=scope.requeue_after)

    async def _cannot_delete(
        self, scope: ClusterScope, helper: PatchHelper, error: PlanError
    ) -> Result:
        scope.blocked = (error.reason, str(error))
        await self.recorder.event(scope.cluster, "Warning", error.reason, str(error))
        status.update(scope)
        await helper.patch(scope.cluster)
        return Result(requeue_after=self.options.failed_retry_interval)

    def runtime_for(self, scope: ClusterScope) -> ControlPlaneRuntime:
        name = scope.spec.get("runtime", "kubernetes")
        runtime = self.runtimes.get(name)
        if runtime is None:
            raise RuntimeNotEnabled(
                f"the {name} runtime is not enabled in this operator; an admin enables it by "
                f"starting the Cluster-Operator with --runtimes naming {name}"
            )
        return runtime

    async def write(self, scope: ClusterScope) -> None:
        """Write the scope's object now (a step's intent, before the step is made)."""
        await self._helpers[scope.key].patch(scope.cluster)


def not_permitted(namespace: str) -> str:
    """Why the operator cannot write a Cluster's Secrets or workloads: the admin did not bind
    its namespaced role there (config/rbac/cluster-operator.yaml)."""
    return (
        f"the Cluster-Operator may not manage Secrets and workloads in namespace {namespace}: "
        f"bind the ClusterRole kokpit-cluster-operator-namespaced there with a RoleBinding"
    )


class RuntimeNotEnabled(PlanError):
    """The Cluster names a runtime this operator was not started with (``process`` is
    opt-in: it runs control planes on the operator's own host)."""

    reason = "RuntimeNotEnabled"


def setup(
    manager: Manager,
    runtimes: Mapping[str, ControlPlaneRuntime],
    recorder: EventRecorder,
    options: ClusterOptions | None = None,
) -> Controller:
    """Create the Cluster-Operator's controller and its watches on ``manager``."""
    options = options or ClusterOptions()
    clusters = manager.cache.informer(CLUSTERS)
    clusters.add_indexers({BY_PACKAGE: by_field(BY_PACKAGE)})
    packages = manager.cache.informer(PACKAGE_VERSIONS)
    reconciler = ClusterReconciler(manager.client, clusters, packages, runtimes, recorder, options)

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
    manager.add(controller)
    return controller
