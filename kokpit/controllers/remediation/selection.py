"""Which RemediationPolicy repairs a fault: label selectors, evaluated as Kubernetes does.

A fault is taken by a policy of its namespace whose ``machineSelector`` matches the Machine's
labels and whose ``faultTypes`` has the fault's type. When several do, the one whose name
sorts first wins: a stable choice a person can predict from ``kubectl get rp`` (name a policy
``00-...`` to make it win). When none does, the fault gets ``Remediated=False`` with reason
``NoPolicy`` and nothing else happens.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kokpit.api.v1alpha1.selector import matches

Object = dict[str, Any]


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
