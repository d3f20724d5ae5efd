"""The Machine-Operator: keeps each host at its MachinePackageVersion, joins it to its
business cluster as a Node, and gates the node on its readiness gates.

Watches Machines, MachinePackageVersions and Clusters (each mapped to the Machines that name
it, through an index), the Condition ConfigMaps (label-selected; each maps to the Machine of
the same name), and the Nodes of every business cluster through the cluster cache (taint or
condition changes; each maps to the Machine of the same name). The reconcile is the runtime's
outline (:mod:`kokpit.runtime.reconcile`) with these phases:

    normal:  package version → packages (:mod:`.host`; a host whose own kubelet joins gets its
             bootstrap kubeconfig first, :mod:`.join`) → node join and gating (:mod:`.node`)
    delete:  package version → drain (:mod:`.drain`) → remove packages → delete the node

What the operator remembers in memory (when it last checked a host's packages, what it last
published on a node, failure counts) only saves work: a restarted operator does it again.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

from kokpit.api.v1alpha1 import CLUSTERS, MACHINE_PACKAGE_VERSIONS, MACHINES
from kokpit.api.v1alpha1.cluster import operator_kubeconfig_secret
from kokpit.controllers.machine import gates, nodewatch, status
from kokpit.controllers.machine.drain import DrainPhases
from kokpit.controllers.machine.host import HostPhases
from kokpit.controllers.machine.join import JoinPhases, kubelet_env
from kokpit.controllers.machine.node import NodePhases
from kokpit.controllers.machine.options import MachineOptions
from kokpit.controllers.machine.scope import MachineScope
from kokpit.providers.guard import Guard
from kokpit.providers.machine import Executor
from kokpit.providers.machine.kubelet import HostKubelet, KwokKubelet, NodeRegistrar
from kokpit.runtime import (
    ClusterCache,
    ClusterCacheOptions,
    Controller,
    ControllerOptions,
    EventRecorder,
    Manager,
    ObjectReconciler,
    Outline,
    Request,
    by_field,
)
from kokpit.runtime.resources import CONFIGMAPS, NODES
from kokpit.runtime.services import ServiceAddresses

FINALIZER = "kokpit.io/machine"
BY_PACKAGE = "spec.packageVersion"
BY_CLUSTER = "spec.clusterRef.name"


class MachineOperator:
    """The Machine-Operator's parts, wired: the reconciler a Controller runs, and what must
    be closed when it stops."""

    def __init__(
        self,
        manager: Manager,
        executors: Mapping[str, Executor],
        recorder: EventRecorder,
        options: MachineOptions,
        registrars: Mapping[str, NodeRegistrar] | None = None,
        guard: Guard | None = None,
    ) -> None:
        cache = manager.cache
        self.machines = cache.informer(MACHINES)
        self.package_versions = cache.informer(MACHINE_PACKAGE_VERSIONS)
        self.clusters = cache.informer(CLUSTERS)
        self.condition_configmaps = cache.informer(CONFIGMAPS, label_selector=f"{gates.LABEL}=true")
        self.cluster_cache = ClusterCache(
            manager.client,
            self.clusters,
            ClusterCacheOptions(
                secret_name=_kokpit_kubeconfig,
                qps=options.cluster_qps,
                burst=options.cluster_burst,
                health_interval=options.cluster_health_interval,
                # Business API servers of the kubernetes runtime are meta-cluster Services.
                resolve=ServiceAddresses(manager.client),
            ),
        )
        registrars = registrars or node_registrars(executors, kwok={"sim"})
        own_kubelet = {n for n, r in registrars.items() if isinstance(r, HostKubelet)}
        join = JoinPhases(manager.client, self.clusters.store, own_kubelet, options)

        def step_env(scope: MachineScope, package: dict[str, Any]) -> dict[str, str]:
            if package["kind"] != "Kubelet" or scope.spec.get("executor", "ssh") not in own_kubelet:
                return {}
            return kubelet_env(scope.spec)

        host = HostPhases(
            manager.client,
            self.package_versions.store,
            executors,
            options,
            before_changes=join.deliver,
            step_env=step_env,
        )
        node = NodePhases(
            manager.client, self.cluster_cache, self.condition_configmaps.store, registrars, options
        )
        drain = DrainPhases(self.cluster_cache, self.clusters.store, options, guard)

        async def forget(scope: MachineScope) -> None:
            await host.forget(scope)
            node.forget(scope)
            join.forget(scope)

        outline: Outline[MachineScope] = Outline(
            resource=MACHINES,
            finalizer=FINALIZER,
            scope=MachineScope,
            phases=(host.find_package_version, host.reconcile_packages, node.reconcile_node),
            delete_phases=(
                host.find_package_version,
                drain.drain_node,
                host.remove_packages,
                drain.delete_node,
            ),
            update_status=status.update,
            resync_after=options.recheck_interval,
            forget=forget,
        )
        self.reconciler = ObjectReconciler(manager.client, self.machines.store, recorder, outline)

    async def close(self) -> None:
        await self.cluster_cache.close()


def node_registrars(
    executors: Mapping[str, Executor], *, kwok: Set[str]
) -> dict[str, NodeRegistrar]:
    """How each executor's Nodes come to be: registered by kokpit for KWOK (``kwok``: hosts
    that run no kubelet, such as simulated ones), or by the host's own kubelet."""
    return {name: KwokKubelet() if name in kwok else HostKubelet() for name in executors}


def setup(
    manager: Manager,
    executors: Mapping[str, Executor],
    recorder: EventRecorder,
    options: MachineOptions | None = None,
    registrars: Mapping[str, NodeRegistrar] | None = None,
    guard: Guard | None = None,
) -> MachineOperator:
    """Create the Machine-Operator's controller and its watches on ``manager``.
    ``registrars`` says, per executor, how a Machine's Node comes to be (default: registered
    for KWOK with the ``sim`` executor, by the host's own kubelet with the others); ``guard``
    is asked before a deleted Machine's Node is drained and deleted."""
    options = options or MachineOptions()
    operator = MachineOperator(manager, executors, recorder, options, registrars, guard)
    machines = operator.machines
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
        operator.reconciler,
        ControllerOptions(max_concurrent_reconciles=options.max_concurrent_reconciles),
    )
    controller.watch(machines, predicate=_spec_or_deletion_changed)
    controller.watch(operator.package_versions, machines_using)
    controller.watch(operator.clusters, machines_of, _endpoint_changed)
    controller.watch(operator.condition_configmaps)  # same namespace and name as the Machine
    controller.watch(
        operator.cluster_cache.watch(
            NODES,
            nodewatch.machines_for_node(machines, BY_CLUSTER),
            predicate=nodewatch.taints_or_conditions_changed,
            transform=nodewatch.node_essentials,
        )
    )
    manager.add(operator.cluster_cache)
    manager.add(controller)
    return operator


def _spec_or_deletion_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """A Machine's own status writes (several per reconcile) need no reconcile of their own;
    a new spec, annotation or a deletion does. Everything else comes back through requeues."""
    if old is None:
        return True
    before, after = old["metadata"], new["metadata"]
    return any(
        before.get(k) != after.get(k) for k in ("generation", "deletionTimestamp", "annotations")
    )


def _endpoint_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Only a change of how to reach a business cluster concerns its Machines (a Cluster's
    status changes often; fanning each change out to thousands of Machines would not do)."""

    def reach(obj: dict[str, Any] | None) -> Any:
        status = (obj or {}).get("status") or {}
        return status.get("endpoint"), status.get("adminKubeconfigSecretRef")

    return old is None or reach(old) != reach(new)


def _kokpit_kubeconfig(cluster: dict[str, Any]) -> str:
    """The Secret the Machine-Operator acts in a business cluster with: the one the
    Cluster-Operator issues for kokpit's own identity there (the cache checks the Cluster
    controls it and its type); never one a Machine or a user names."""
    return operator_kubeconfig_secret(cluster["metadata"]["name"])


def _requests(objs: Any) -> list[Request]:
    return [Request(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs]
