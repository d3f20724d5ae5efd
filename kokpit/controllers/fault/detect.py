"""The detectors that read a business cluster: a Node's conditions, its Ready condition and its
Lease, each turned into :class:`~.record.Observation` objects by pure functions.

What is kept of each object (the informer transforms) is what the detectors read and nothing
that changes on every heartbeat: a Node's fault conditions and Ready (type, status, reason,
message, lastTransitionTime), a Lease's renewTime. A Lease is renewed every few seconds, so its
watch reconciles a Machine only when a renewal ends a staleness (:func:`lease_revived`); the
Machine's own reconcile comes back when the Lease would turn stale, through the work queue's
delayed requeue (one heap for all Machines, no timer per object).

Every value here was written by someone else (a node agent, node-problem-detector, a kubelet):
a missing or unparsable time is no time, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kokpit.api.v1alpha1.nodefault import NODE_CONDITION_FAULTS
from kokpit.controllers.fault.record import Observation, parse_time, stamp
from kokpit.runtime.controller import Predicate

Object = dict[str, Any]
#: The Node conditions the hub reads.
WATCHED_CONDITIONS = frozenset((*NODE_CONDITION_FAULTS, "Ready"))
#: Where the kubelets' Leases are.
NODE_LEASE_NAMESPACE = "kube-node-lease"


@dataclass
class Findings:
    """What the detectors saw of one Machine, and when they want to look again."""

    observations: list[Observation] = field(default_factory=list)
    #: Seconds until a pending verdict is due (a grace running out); None: nothing pending.
    recheck_in: float | None = None

    def recheck(self, seconds: float) -> None:
        seconds = max(seconds, 0.5)  # never a tight loop, whatever a clock says
        if self.recheck_in is None or seconds < self.recheck_in:
            self.recheck_in = seconds


def node_view(node: Object) -> Object:
    """The Node informer's transform: its identity and the conditions the hub reads, without
    the heartbeat times that change every few seconds."""
    meta = node.get("metadata") or {}
    conditions = [
        {k: c.get(k) for k in ("type", "status", "reason", "message", "lastTransitionTime")}
        for c in (node.get("status") or {}).get("conditions") or []
        if isinstance(c, Mapping) and c.get("type") in WATCHED_CONDITIONS
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {k: meta[k] for k in ("name", "uid", "resourceVersion") if k in meta},
        "status": {"conditions": conditions},
    }


def conditions_changed(old: Object | None, new: Object) -> bool:
    """The Node watch's predicate: a change of what the hub reads."""
    return old is None or bool(old["status"]["conditions"] != new["status"]["conditions"])


def lease_view(lease: Object) -> Object:
    """The Lease informer's transform: its identity and when it was last renewed."""
    meta = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta
        },
        "spec": {"renewTime": spec.get("renewTime") or spec.get("acquireTime")},
    }


def lease_revived(grace: float) -> Predicate:
    """The Lease watch's predicate: a new Lease, or a renewal after a gap longer than
    ``grace`` (the Lease had gone stale: its fault may clear). A routine renewal reconciles
    nothing."""

    def predicate(old: Object | None, new: Object) -> bool:
        if old is None:
            return True
        before = parse_time(old["spec"].get("renewTime"))
        after = parse_time(new["spec"].get("renewTime"))
        if before is None or after is None:
            return before != after
        return after - before > timedelta(seconds=grace)

    return predicate


def node_conditions(node: Object | None) -> list[Observation]:
    """Fault conditions of the Node (NPD's and the node agent's): True is an Active fault,
    False or absent clears it, Unknown says nothing. No Node: nothing can be said."""
    if node is None:
        return []
    by_type = {c.get("type"): c for c in node["status"]["conditions"]}
    found: list[Observation] = []
    for type_ in NODE_CONDITION_FAULTS:
        condition = by_type.get(type_)
        if condition is None:
            found.append(Observation(type_, "NodeCondition", False, f"the node has no {type_}"))
            continue
        status = condition.get("status")
        if status not in ("True", "False"):
            continue
        found.append(Observation(type_, "NodeCondition", status == "True", _said(condition)))
    return found


def node_ready(node: Object | None, now: datetime, grace: float, findings: Findings) -> None:
    """NodeNotReady once the Node's Ready condition has not been True for ``grace`` (since its
    lastTransitionTime); Ready True clears it. Within the grace nothing is said yet, and the
    reconcile comes back when the grace ends."""
    if node is None:
        return
    ready = next((c for c in node["status"]["conditions"] if c.get("type") == "Ready"), None)
    if ready is None:
        return  # a node that has not reported yet
    if ready.get("status") == "True":
        findings.observations.append(Observation("NodeNotReady", "NodeReady", False, "Ready"))
        return
    since = parse_time(ready.get("lastTransitionTime")) or now
    left = (since + timedelta(seconds=grace) - now).total_seconds()
    if left > 0:
        findings.recheck(left)
        return
    message = f"Ready is {ready.get('status')} since {stamp(since)}: {_said(ready)}"
    findings.observations.append(Observation("NodeNotReady", "NodeReady", True, message))


def node_lease(lease: Object | None, now: datetime, grace: float, findings: Findings) -> None:
    """NodeLeaseStale once the Node's Lease has not been renewed for ``grace``; a renewal
    clears it. No Lease (a kubelet that keeps none) says nothing. While fresh, the reconcile
    comes back when it would turn stale."""
    if lease is None:
        return
    renewed = parse_time(lease["spec"].get("renewTime"))
    if renewed is None:
        return
    left = (renewed + timedelta(seconds=grace) - now).total_seconds()
    if left > 0:
        findings.observations.append(Observation("NodeLeaseStale", "NodeLease", False, "renewed"))
        findings.recheck(left)
        return
    age = int((now - renewed).total_seconds())
    message = f"the node's Lease was last renewed {age} s ago ({stamp(renewed)})"
    findings.observations.append(Observation("NodeLeaseStale", "NodeLease", True, message))


def _said(condition: Mapping[str, Any]) -> str:
    """What a condition says, for a person: its reason and message (anyone's text, cut)."""
    reason, message = condition.get("reason"), condition.get("message")
    parts = [str(p) for p in (reason, message) if isinstance(p, str) and p]
    return ": ".join(parts)[:512] or f"{condition.get('type')} is {condition.get('status')}"
