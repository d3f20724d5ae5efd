"""The fault hub's metrics, in the runtime's registry (served on ``/metrics``).

``kokpit_node_faults_active{type}`` is counted from the NodeFault informer, not from what this
process wrote: it is the fleet's state as the API server holds it, right after a restart too.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge

from kokpit.api.v1alpha1.nodefault import FAULT_TYPES
from kokpit.runtime.metrics import REGISTRY
from kokpit.runtime.store import object_key

ACTIVE = Gauge(
    "kokpit_node_faults_active",
    "NodeFault records whose fault is Active, by fault type.",
    ["type"],
    registry=REGISTRY,
)
TRANSITIONS = Counter(
    "kokpit_node_fault_transitions_total",
    "NodeFault records this process turned Active or Cleared, by fault type and new state.",
    ["type", "state"],
    registry=REGISTRY,
)
PROBES = Counter(
    "kokpit_node_fault_probes_total",
    "Host probes run, by result (reachable, unreachable, skipped).",
    ["result"],
    registry=REGISTRY,
)


class ActiveFaults:
    """An informer handler on NodeFaults that keeps :data:`ACTIVE` current."""

    def __init__(self) -> None:
        self._active: dict[str, str] = {}  # key -> fault type, for Active records
        for type_ in FAULT_TYPES:
            ACTIVE.labels(type_).set(0)

    def on_add(self, obj: dict[str, Any]) -> None:
        self._set(obj)

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self._set(new)

    def on_delete(self, obj: dict[str, Any]) -> None:
        self._drop(object_key(obj))

    def _set(self, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        type_ = (obj.get("spec") or {}).get("type")
        if (obj.get("status") or {}).get("state") == "Active" and isinstance(type_, str):
            if self._active.get(key) != type_:
                self._drop(key)
                self._active[key] = type_
                ACTIVE.labels(type_).inc()
        else:
            self._drop(key)

    def _drop(self, key: str) -> None:
        type_ = self._active.pop(key, None)
        if type_ is not None:
            ACTIVE.labels(type_).dec()
