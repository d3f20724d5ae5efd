"""The Remediation workflow's Prometheus metrics (in the runtime's registry, served by the
manager with the controller metrics)."""

from __future__ import annotations

from prometheus_client import Counter

from kokpit.runtime.metrics import REGISTRY

ESCALATIONS = Counter(
    "kokpit_remediation_escalations_total",
    "Remediations that exhausted their ladder and wait for a person, by namespace and policy.",
    ["namespace", "policy"],
    registry=REGISTRY,
)
ACTIONS = Counter(
    "kokpit_remediation_actions_total",
    "Repair actions started, by action and how the attempt ended (Started while running).",
    ["action", "result"],
    registry=REGISTRY,
)
STORM_STOPS = Counter(
    "kokpit_remediation_storm_stops_total",
    "Times a policy's storm stop engaged (StormStopped turned True), by namespace and policy.",
    ["namespace", "policy"],
    registry=REGISTRY,
)
