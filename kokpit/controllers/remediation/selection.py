"""Which RemediationPolicy repairs a fault: label selectors, evaluated as Kubernetes does.

A fault is taken by a policy of its namespace whose ``machineSelector`` matches the Machine's
labels and whose ``faultTypes`` has the fault's type. When several do, the one whose name
sorts first wins: a stable choice a person can predict from ``kubectl get rp`` (name a policy
``00-...`` to make it win). When none does, the fault gets ``Remediated=False`` with reason
``NoPolicy`` and nothing else happens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Object = dict[str, Any]


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy a ``metav1.LabelSelector`` (matchLabels and
    matchExpressions); an empty selector matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.get("matchExpressions") or []:
        key, operator = requirement.get("key", ""), requirement.get("operator")
        values = requirement.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # unknown: match nothing rather than everything
    return True


def choose_policy(policies: Iterable[Object], machine: Object, fault_type: str) -> Object | None:
    """The policy that takes a fault of ``fault_type`` on ``machine`` (see the module doc)."""
    labels = machine["metadata"].get("labels") or {}
    candidates = [
        p
        for p in policies
        if not p["metadata"].get("deletionTimestamp")
        and fault_type in (p["spec"].get("faultTypes") or [])
        and matches(p["spec"].get("machineSelector"), labels)
    ]
    return min(candidates, key=lambda p: p["metadata"]["name"], default=None)
