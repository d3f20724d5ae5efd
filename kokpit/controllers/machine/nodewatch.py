"""The Machine-Operator's watch on the Nodes of every business cluster (through the
:class:`~kokpit.runtime.ClusterCache`): a node whose taints or published conditions change
(a ``kokpit.io/not-ready`` taint removed by hand, say) reconciles its Machine within seconds,
instead of at the next recheck.

Only what the gates act on is kept of each Node (name, taints, conditions): a thousand-node
cluster costs a fraction of full Node objects (see ``bench/clustercache.py``)."""

from __future__ import annotations

from typing import Any

from kokpit.controllers.machine import gates
from kokpit.runtime import ClusterAccessor, Informer, Request
from kokpit.runtime.clustercache import ClusterMapper
from kokpit.runtime.resources import NODES

Object = dict[str, Any]


def node_essentials(node: Object) -> Object:
    """The informer transform: the node's identity, taints and conditions (without the
    heartbeat times that change every few seconds)."""
    meta = node.get("metadata") or {}
    status = node.get("status") or {}
    conditions = [
        {k: c.get(k) for k in ("type", "status", "reason", "message")}
        for c in status.get("conditions") or []
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {k: meta[k] for k in ("name", "uid", "resourceVersion") if k in meta},
        "spec": {"taints": (node.get("spec") or {}).get("taints") or []},
        "status": {"conditions": conditions},
    }


def taints_or_conditions_changed(old: Object | None, new: Object) -> bool:
    """A predicate: only a change the gates care about reconciles the Machine."""
    if old is None:
        return True
    return bool(
        old["spec"] != new["spec"] or old["status"]["conditions"] != new["status"]["conditions"]
    )


def machines_for_node(machines: Informer, cluster_ref: str) -> ClusterMapper:
    """The mapper: a node reconciles the Machine of the same name in its Cluster's namespace,
    if that Machine joins this Cluster (not every node is a Machine's)."""

    def mapper(cluster_key: str, node: Object) -> list[Request]:
        namespace, cluster = cluster_key.split("/", 1)
        name = node["metadata"]["name"]
        machine = machines.store.get(f"{namespace}/{name}")
        if machine is None or _get(machine, cluster_ref) != cluster:
            return []
        return [Request(namespace, name)]

    return mapper


def node_informer(cluster: ClusterAccessor) -> Informer:
    """The business cluster's shared Node informer (the one the watch uses)."""
    return cluster.informer(NODES, transform=node_essentials)


def drifted(cluster: ClusterAccessor, name: str, verdict: gates.Verdict) -> bool:
    """The cached node differs from what the verdict wants published: the not-ready taint
    (added or removed by someone else) or a published condition. Unknown is not drift."""
    node = node_informer(cluster).store.get(name)
    if node is None:
        return False
    tainted = any(t.get("key") == gates.NOT_READY_TAINT["key"] for t in node["spec"]["taints"])
    if tainted == verdict.passed:
        return True
    current = {c["type"]: c for c in node["status"]["conditions"]}
    return any((current.get(r.type) or {}).get("status") != r.status for r in verdict.conditions)


def _get(obj: Object, path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value
