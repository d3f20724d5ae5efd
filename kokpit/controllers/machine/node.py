"""The Machine's Node: join it to the business cluster once the kubelet package is installed,
then gate it — publish the gates' conditions (each from its own reporter) on the node and keep
the not-ready taint until every gate passes. The Condition ConfigMap format and the verdict
are in :mod:`.gates`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kokpit.api.conditions import now
from kokpit.controllers.machine import gates, nodewatch, status
from kokpit.controllers.machine.options import MachineOptions
from kokpit.controllers.machine.scope import MachineScope, Object
from kokpit.providers.machine.kubelet import (
    NodeNotRegistered,
    NodeRegistrar,
    NodeTaken,
    Registration,
)
from kokpit.runtime import (
    Client,
    ClusterCache,
    ClusterNotReady,
    Conflict,
    NotFound,
    Recently,
    controlled_by,
    owner_reference,
)
from kokpit.runtime.resources import CONFIGMAPS, NODES
from kokpit.runtime.store import Store


class NodePhases:
    def __init__(
        self,
        client: Client,
        clusters: ClusterCache,
        condition_configmaps: Store,
        registrars: Mapping[str, NodeRegistrar],
        options: MachineOptions,
    ) -> None:
        self._client = client
        self._clusters = clusters
        self._configmaps = condition_configmaps
        self._registrars = registrars
        self._options = options
        #: The verdict this process last published on each node: no node write while current.
        self._published: Recently[gates.Verdict] = Recently(options.recheck_interval)

    async def reconcile_node(self, scope: MachineScope) -> bool:
        if not scope.has_kubelet:
            return True
        try:
            cluster = await self._clusters.get(scope.cluster_key)
        except ClusterNotReady as e:
            scope.node_problem = ("ClusterNotReady", str(e))
            scope.requeue(self._options.retry_interval)
            return False
        client = cluster.client
        node: Object | None = None
        if not self._joined(scope):
            try:
                node = await self._register(scope, client)
            except NodeNotRegistered as e:
                scope.node_problem = ("NodeNotRegistered", str(e))
                scope.requeue(self._options.retry_interval)
                return False
            except (NodeTaken, ConfigMapTaken) as e:  # somebody else's: a person decides
                reason = "NodeNameTaken" if isinstance(e, NodeTaken) else "ConditionConfigMapTaken"
                scope.node_problem = (reason, str(e))
                scope.event("Warning", reason, str(e))
                scope.requeue(self._options.max_backoff)
                return False
        reports, problems = gates.parse(self._configmaps.get(scope.key))
        gate_list = scope.spec.get("readinessGates") or []
        verdict = gates.evaluate(gate_list, reports, bool(scope.status.get("bootstrapped")))
        if verdict.all_passed:
            scope.status["bootstrapped"] = True
        scope.gates_passed = verdict.passed
        scope.gates_message = "; ".join([verdict.message, *problems])
        _mirror_gates(scope, gate_list, {c.type: c for c in verdict.conditions})  # owners' only
        if self._published.holds(scope.uid, verdict) and not nodewatch.drifted(
            cluster, scope.name, verdict
        ):
            return True
        if node is None:
            try:
                node = await client.get(NODES, scope.status["nodeName"])
            except NotFound:  # deleted behind our back: register again
                self.forget(scope)
                scope.status["nodeName"] = None
                scope.requeue(0.5)
                return False
        node = await self._publish_conditions(client, node, verdict)
        await _set_taint(client, node, not verdict.passed)
        self._published.remember(scope.uid, verdict)
        return True

    def forget(self, scope: MachineScope) -> None:
        self._published.forget(scope.uid)

    def _joined(self, scope: MachineScope) -> bool:
        """The node registered and its Condition ConfigMap exists (a node deleted behind our
        back is found when it is next read, and registered again)."""
        return bool(scope.status.get("nodeName")) and self._configmaps.get(scope.key) is not None

    async def _register(self, scope: MachineScope, client: Client) -> Object:
        """Register the node (as its kubelet would), tainted not-ready while gates are
        pending, and create its Condition ConfigMap for the reporters."""
        taints = gates.registration_taints(scope.spec)
        registration = Registration(
            name=scope.name,
            machine=scope.key,
            address=scope.spec["address"],
            labels=scope.spec.get("nodeLabels") or {},
            taints=taints,
        )
        await self._ensure_configmap(scope)  # first: a refused one leaves no Node behind
        registrar = self._registrars[scope.spec.get("executor", "ssh")]
        node = await registrar.register(client, registration)
        scope.status["nodeName"] = scope.name
        return node

    async def _ensure_configmap(self, scope: MachineScope) -> None:
        """The Condition ConfigMap, owned by the Machine. One of that name that the Machine
        does not own is somebody else's: it is left alone and the node is not gated on it."""
        try:
            existing = await self._client.get(CONFIGMAPS, scope.name, namespace=scope.namespace)
        except NotFound:
            existing = None
        if existing is not None and not controlled_by(existing, scope.uid):
            raise ConfigMapTaken(
                f"ConfigMap {scope.name} exists and is not owned by this Machine; rename or "
                f"delete it so kokpit can create the node's Condition ConfigMap"
            )
        if existing is not None:
            return
        await self._client.create(
            CONFIGMAPS,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": scope.name,
                    "namespace": scope.namespace,
                    "labels": {gates.LABEL: "true"},
                    "ownerReferences": [owner_reference(scope.obj)],
                },
            },
        )

    async def _publish_conditions(
        self, client: Client, node: Object, verdict: gates.Verdict
    ) -> Object:
        """Server-side apply of the reported conditions on the node's status, as their own
        field manager: the kubelet's (KWOK's) conditions are left alone, and a condition no
        longer reported is removed with our ownership of it."""
        manager = self._options.gates_field_manager
        current = {c["type"]: c for c in (node.get("status") or {}).get("conditions") or []}
        if all(_published(current.get(r.type), r) for r in verdict.conditions) and not (
            _ours(node, manager) - {r.type for r in verdict.conditions}
        ):
            return node  # nothing to change: no write
        stamp = now()
        conditions = []
        for report in verdict.conditions:
            old = current.get(report.type)
            unchanged = old is not None and old.get("status") == report.status
            conditions.append(
                {
                    "type": report.type,
                    "status": report.status,
                    "reason": report.reason,
                    "message": report.message,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": old["lastTransitionTime"] if old and unchanged else stamp,
                }
            )
        return await client.apply(
            NODES,
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": node["metadata"]["name"]},
                "status": {"conditions": conditions},
            },
            subresource="status",
            field_manager=manager,
        )


class ConfigMapTaken(Exception):
    """A ConfigMap of the Machine's name exists and is not the Machine's."""


def _published(condition: Object | None, report: gates.Report) -> bool:
    return condition is not None and all(
        condition.get(k) == v
        for k, v in (
            ("status", report.status),
            ("reason", report.reason),
            ("message", report.message),
        )
    )


def _ours(node: Object, manager: str) -> set[str]:
    """The condition types ``manager`` owns on the node, from its managedFields."""
    types: set[str] = set()
    for entry in node["metadata"].get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("subresource") != "status":
            continue
        fields = (entry.get("fieldsV1") or {}).get("f:status", {}).get("f:conditions", {})
        for key in fields:
            if key.startswith("k:"):
                types.add(json.loads(key[2:])["type"])
    return types


async def _set_taint(client: Client, node: Object, tainted: bool) -> None:
    """Add or remove the not-ready taint; conditional on the node's resourceVersion, because
    taints are one list that the node lifecycle controller writes too."""
    name = node["metadata"]["name"]
    for attempt in range(3):
        taints = (node.get("spec") or {}).get("taints") or []
        if any(_is_gate_taint(t) for t in taints) == tainted:
            return
        new = [t for t in taints if not _is_gate_taint(t)]
        if tainted:
            new.append(gates.NOT_READY_TAINT)
        rv = node["metadata"]["resourceVersion"]
        try:
            await client.patch(
                NODES, name, {"metadata": {"resourceVersion": rv}, "spec": {"taints": new}}
            )
            return
        except Conflict:  # the kubelet (KWOK) wrote the node in between: read it again
            if attempt == 2:
                raise
            node = await client.get(NODES, name)


def _is_gate_taint(taint: dict[str, Any]) -> bool:
    return bool(taint.get("key") == gates.NOT_READY_TAINT["key"])


def _mirror_gates(
    scope: MachineScope, gate_list: list[Object], reports: Mapping[str, gates.Report]
) -> None:
    """Copy each gate's condition, as its reporter reported it, onto the Machine (Unknown when
    missing); conditions of gates no longer in the spec are dropped."""
    types = {g["conditionType"] for g in gate_list}
    kept = [
        c
        for c in scope.status.get("conditions") or []
        if c["type"] in types or c["type"] in status.OWN_CONDITIONS
    ]
    scope.status["conditions"] = kept
    scope.mirrored = {
        t: reports.get(t) or gates.Report(t, "Unknown", "NotReported", "no report yet")
        for t in sorted(types)
    }
