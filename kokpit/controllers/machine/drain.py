"""Taking a Machine's Node out of its business cluster when the Machine is deleted: cordon,
evict its pods through the Eviction API (PodDisruptionBudgets hold it back), and delete the
Node once the packages are gone. Only a Node registered for this Machine is touched.

A drain may wait forever on a budget that never allows an eviction. A Machine's
``drainTimeoutSeconds`` ends the wait (counted from its deletion): the pods left are named in an
Event and the delete goes on, as Cluster API's ``nodeDrainTimeout`` does."""

from __future__ import annotations

import contextlib

from kokpit.controllers.machine.options import MachineOptions
from kokpit.controllers.machine.scope import MachineScope, Object
from kokpit.providers.guard import GUARD_DENIED, Guard, RiskRequest, held
from kokpit.providers.machine.drain import evict, set_unschedulable, stays
from kokpit.providers.machine.kubelet import owned_by
from kokpit.runtime import Client, ClusterCache, ClusterNotReady, NotFound
from kokpit.runtime.resources import NODES, PODS
from kokpit.runtime.store import Store


class DrainPhases:
    def __init__(
        self,
        clusters: ClusterCache,
        cluster_objects: Store,
        options: MachineOptions,
        guard: Guard | None = None,
    ):
        self._clusters = clusters
        self._cluster_objects = cluster_objects
        self._options = options
        #: Asked before a Machine's Node is taken out of its cluster (NodeDelete).
        self._guard = guard

    async def drain_node(self, scope: MachineScope) -> bool:
        """Cordon the node and evict its pods; True once no pod that needs moving is left."""
        client = await self._client(scope)
        if client is None:
            return scope.node_problem is None  # the cluster is gone, and its nodes with it
        node = await _our_node(client, scope)
        if node is None:
            return True
        if not await self._allowed(scope, node):
            return False
        name = node["metadata"]["name"]
        await set_unschedulable(client, node, True)
        pods = (await client.list(PODS, field_selector=f"spec.nodeName={name}")).items
        remaining, blocked = [], []
        for pod in pods:
            meta = pod["metadata"]
            if stays(pod):
                continue
            remaining.append(f"{meta['namespace']}/{meta['name']}")
            if meta.get("deletionTimestamp"):
                continue
            if (refused := await evict(client, pod)) is not None:
                blocked.append(f"{refused.pod}: {refused.message}")
        if not remaining:
            return True
        timeout = scope.spec.get("drainTimeoutSeconds")
        if timeout is not None and scope.seconds_deleted() > float(timeout):
            message = f"drain gave up after {timeout}s; pods left: {', '.join(remaining[:10])}"
            scope.event("Warning", "DrainTimedOut", message)
            return True
        if blocked:
            message = "eviction refused (PodDisruptionBudget): " + "; ".join(blocked[:5])
            scope.node_problem = ("DrainBlocked", message)
            scope.event("Warning", "DrainBlocked", message)
        else:
            scope.node_problem = ("Draining", f"waiting for {len(remaining)} pods to leave {name}")
        scope.requeue(self._options.drain_poll_interval)
        return False

    async def delete_node(self, scope: MachineScope) -> bool:
        client = await self._client(scope)
        if client is not None and (node := await _our_node(client, scope)) is not None:
            with contextlib.suppress(NotFound):
                await client.delete(NODES, node["metadata"]["name"])
        if self._guard is not None and scope.status.get("nodeName"):
            await self._guard.release(_request(scope, None), "Succeeded")
        scope.status["nodeName"] = None
        return client is not None or scope.node_problem is None

    async def _allowed(self, scope: MachineScope, node: Object) -> bool:
        """Whether the guard lets the node go (asked on every pass of the drain; the key is
        the Machine's, so every ask after the first is answered from the ledger)."""
        if self._guard is None:
            return True
        verdict = await self._guard.acquire(_request(scope, node))
        if verdict.allowed:
            return True
        o = self._options
        message, wait = held(
            verdict,
            f"deleting node {node['metadata']['name']}",
            at_least=o.drain_poll_interval,
            at_most=o.retry_interval,
        )
        scope.node_problem = (GUARD_DENIED, message)
        scope.event("Warning", GUARD_DENIED, message)
        scope.requeue(wait)
        return False

    async def _client(self, scope: MachineScope) -> Client | None:
        """The business cluster's client; None when there is no node to act on, or when the
        cluster cannot be reached (then ``node_problem`` says so and a requeue is asked)."""
        if not scope.status.get("nodeName"):
            return None
        try:
            return (await self._clusters.get(scope.cluster_key)).client
        except ClusterNotReady as e:
            if self._cluster_objects.get(scope.cluster_key) is not None:
                scope.node_problem = ("ClusterNotReady", str(e))
                scope.requeue(self._options.retry_interval)
            return None


def _request(scope: MachineScope, node: Object | None) -> RiskRequest:
    meta = scope.obj["metadata"]
    labels = ((node or {}).get("metadata") or {}).get("labels") or {}
    return RiskRequest(
        "NodeDelete",
        f"{meta['uid']}/delete",
        f"Machine {scope.key}",
        scope.cluster_key,
        labels,
    )


async def _our_node(client: Client, scope: MachineScope) -> Object | None:
    """The Machine's Node, if it exists and was registered for this Machine."""
    try:
        node = await client.get(NODES, scope.status["nodeName"])
    except NotFound:
        return None
    return node if owned_by(node, scope.key) else None
