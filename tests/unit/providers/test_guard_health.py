"""How much of a scope is down, counted over Machines (maxUnavailablePercent)."""

from __future__ import annotations

from typing import Any

from kokpit.providers.guard.health import MachineHealth
from kokpit.runtime.store import Store


def machine(name: str, cluster: str, zone: str | None, ready: bool) -> dict[str, Any]:
    labels = {"topology.kubernetes.io/zone": zone} if zone else {}
    return {
        "metadata": {"name": name, "namespace": "fleet"},
        "spec": {"clusterRef": {"name": cluster}, "nodeLabels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_a_scope_counts_its_machines_and_those_not_ready() -> None:
    store = Store()
    for m in (
        machine("a1", "prod", "a", True),
        machine("a2", "prod", "a", False),
        machine("b1", "prod", "b", True),
        machine("c1", "test", None, False),
    ):
        store.upsert(m)
    health = MachineHealth(store)
    zone = "topology.kubernetes.io/zone"
    assert health.count("Fleet", "*", None) == (4, 2)
    assert health.count("Cluster", "fleet/prod", None) == (3, 1)
    assert health.count("FailureDomain", "a", zone) == (2, 1)
    assert health.count("FailureDomain", f"(no {zone})", zone) == (1, 1)
