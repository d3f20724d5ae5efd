"""How much of a scope is down, for RiskPolicies with ``maxUnavailablePercent``: counted over
the Machines the meta-cluster holds (a Machine's node is unavailable while the Machine is not
Ready). A Machine's failure domain is the value of the policy's label among the labels it puts
on its node (``spec.nodeLabels``)."""

from __future__ import annotations

from typing import Any

from kokpit.api.conditions import READY, is_true
from kokpit.runtime.store import Store


class MachineHealth:
    """A :class:`~kokpit.providers.guard.local.ScopeHealth` over an informer's Machines."""

    def __init__(self, machines: Store) -> None:
        self._machines = machines

    def count(self, scope: str, key: str, label: str | None) -> tuple[int, int] | None:
        total = unavailable = 0
        for machine in self._machines.list():
            if not _in(machine, scope, key, label):
                continue
            total += 1
            if not is_true((machine.get("status") or {}).get("conditions") or [], READY):
                unavailable += 1
        return total, unavailable


def _in(machine: dict[str, Any], scope: str, key: str, label: str | None) -> bool:
    spec = machine.get("spec") or {}
    if scope == "Cluster":
        cluster = (spec.get("clusterRef") or {}).get("name")
        return f"{machine['metadata'].get('namespace')}/{cluster}" == key
    if scope == "FailureDomain" and label is not None:
        value = (spec.get("nodeLabels") or {}).get(label)
        return (value or f"(no {label})") == key
    return True
