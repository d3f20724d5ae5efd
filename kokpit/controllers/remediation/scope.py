"""What one reconcile of a Remediation works on: the Remediation (a private copy, written at
the end and before each risky step), what it refers to as the caches hold them, and the facts
the phases record for its conditions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kokpit.runtime import ObjectScope

Object = dict[str, Any]

#: Gives back the node kokpit cordoned when a Remediation is deleted. The starter creates
#: each Remediation with it, so the workflow never has to add it (a write less, and none that
#: races the starter's status write).
FINALIZER = "kokpit.io/remediation"
#: Phases in which the workflow acts on the node: they count against maxConcurrent.
IN_PROGRESS = ("Cordoning", "Draining", "Repairing", "Verifying", "Uncordoning")
#: Phases the workflow never leaves by itself.
FINISHED = ("Succeeded", "Closed")


def age(obj: Object, at: datetime) -> float:
    """Seconds since ``obj`` was created, at least (0 if it carries no creation time). The
    creation time is whole seconds, cut: an object stamped ``:10`` was made between ``:10``
    and ``:11``, so it is counted as made at ``:11``. Counted from the stamp, a remediation
    1.01 s old could pass for 2 s old and start before a storm's quiet period was over."""
    stamp = obj["metadata"].get("creationTimestamp")
    if not stamp:
        return 0.0
    created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return max(0.0, (at - created).total_seconds() - 1.0)


@dataclass
class RemediationScope(ObjectScope):
    #: The NodeFault being repaired (None once it is gone).
    fault: Object | None = None
    #: Its Machine (None if it is gone).
    machine: Object | None = None
    #: The RemediationPolicy (None if it is gone; the snapshot of its ladder goes on).
    policy: Object | None = None
    #: (reason, message) of what holds the workflow now (the cluster unreachable, the node
    #: missing); reported on the condition of the current phase.
    problem: tuple[str, str] | None = None

    @property
    def ladder(self) -> list[Object]:
        return list(self.status.get("ladder") or [])

    @property
    def step(self) -> int:
        return int(self.status.get("step") or 0)

    @property
    def attempts(self) -> list[Object]:
        attempts: list[Object] = self.status.setdefault("attempts", [])
        return attempts

    @property
    def last_attempt(self) -> Object | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def node_name(self) -> str:
        return str(self.status.get("nodeName") or "")

    @property
    def cluster_key(self) -> str:
        """The Cluster (namespace/name) whose node this is."""
        return f"{self.namespace}/{self.status.get('clusterName') or ''}"
