"""The storm stop: when too many nodes of a scope look unhealthy at once, repairing them
would make things worse (a partition, a broken switch, a faulty detector), so no remediation
starts there until the scope is healthy enough again.

A scope is the Machine's Cluster, or with the policy's ``stormStop.scopeLabel`` the failure
domain named by that node label within the Cluster (nodes without the label form their own
domain). A node is healthy when it is Ready, reports no fault condition and has no Active
NodeFault. A scope whose share of healthy nodes is below ``minHealthyPercent`` is stopped.
Everything here is pure.

Why the node's own fault conditions count, not only the hub's records: a storm's faults reach
the nodes' conditions within seconds, but the hub records them one reconcile at a time, and on
a loaded control plane that took 45 s for 400 faults with pauses between them; a scope judged
on the records alone looked healthy in such a pause (bench/results/healing-latency-10000-
1cluster.json: 244 of 400 admitted). Counted from the conditions, the storm is seen as soon as
the cluster cache sees it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Set
from dataclasses import dataclass
from typing import Any

from kokpit.api.v1alpha1.nodefault import NODE_CONDITION_FAULTS
from kokpit.api.v1alpha1.remediation import CORDONED_BY

Object = dict[str, Any]


def node_summary(node: Object) -> Object:
    """The informer transform: what the workflow and the storm stop need of a Node (name,
    labels, whether it is cordoned and by which remediation, its Ready condition and the fault
    conditions it reports True), and not its heartbeats."""
    meta = node.get("metadata") or {}
    kept = [
        {k: c.get(k) for k in ("type", "status", "lastTransitionTime")}
        for c in (node.get("status") or {}).get("conditions") or []
        if isinstance(c, dict)
        and (
            c.get("type") == "Ready"
            or (c.get("type") in NODE_CONDITION_FAULTS and c.get("status") == "True")
        )
    ]
    kept_meta = {k: meta[k] for k in ("name", "uid", "resourceVersion", "labels") if k in meta}
    cordoned_by = (meta.get("annotations") or {}).get(CORDONED_BY)
    if cordoned_by is not None:
        kept_meta["annotations"] = {CORDONED_BY: cordoned_by}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": kept_meta,
        "spec": {"unschedulable": bool((node.get("spec") or {}).get("unschedulable"))},
        "status": {"conditions": kept},
    }


def reports_fault(node: Object) -> bool:
    """The node reports a fault condition (node-problem-detector's, the node agent's) True,
    whether or not the hub has recorded it yet."""
    return any(
        c.get("type") in NODE_CONDITION_FAULTS and c.get("status") == "True"
        for c in ((node.get("status") or {}).get("conditions") or [])
    )


def ready_since(node: Object | None) -> str | None:
    """When the node last became Ready (its condition's transition time), None if not Ready."""
    for c in ((node or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "True":
            return str(c.get("lastTransitionTime") or "") or "1970-01-01T00:00:00Z"
    return None


@dataclass(frozen=True)
class Scope:
    """Where a storm is judged: a Cluster (namespace/name), and a failure domain in it."""

    cluster: str
    label: str | None = None
    value: str | None = None

    def __str__(self) -> str:
        if self.label is None:
            return f"Cluster {self.cluster}"
        domain = f"{self.label}={self.value}" if self.value is not None else f"no {self.label}"
        return f"{domain} in Cluster {self.cluster}"

    def holds(self, node: Object) -> bool:
        if self.label is None:
            return True
        return (node["metadata"].get("labels") or {}).get(self.label) == self.value


def scope_of(cluster: str, node: Object | None, scope_label: str | None) -> Scope:
    """The scope of a node of ``cluster`` (namespace/name) under a policy's scopeLabel."""
    if not scope_label:
        return Scope(cluster)
    value = ((node or {}).get("metadata", {}).get("labels") or {}).get(scope_label)
    return Scope(cluster, scope_label, value)


@dataclass(frozen=True)
class Health:
    scope: Scope
    total: int
    #: The names of the scope's nodes that are not healthy.
    unhealthy: frozenset[str] = frozenset()

    @property
    def healthy(self) -> int:
        return self.total - len(self.unhealthy)

    @property
    def percent(self) -> float:
        return 100.0 * self.healthy / self.total if self.total else 100.0

    def below(self, min_percent: int) -> bool:
        return self.percent < min_percent

    def describe(self, min_percent: int) -> str:
        return (
            f"{self.scope}: {self.healthy} of {self.total} nodes healthy "
            f"({self.percent:.0f}%, below {min_percent}%)"
        )


def healths(
    cluster: str, nodes: Iterable[Object], faulty: Set[str], scope_label: str | None
) -> dict[Scope, Health]:
    """The health of every scope of ``cluster`` (namespace/name) that has nodes: its nodes
    that are Ready, report no fault condition and are not in ``faulty`` (the names of the
    cluster's nodes with an Active fault). One pass over the nodes, not one per scope: ten
    thousand nodes in tens of scopes are counted on every admission pass."""
    total: Counter[Scope] = Counter()
    unhealthy: defaultdict[Scope, set[str]] = defaultdict(set)
    for node in nodes:
        scope = scope_of(cluster, node, scope_label)
        total[scope] += 1
        name = node["metadata"]["name"]
        if ready_since(node) is None or name in faulty or reports_fault(node):
            unhealthy[scope].add(name)
    return {
        scope: Health(scope, count, frozenset(unhealthy[scope])) for scope, count in total.items()
    }
