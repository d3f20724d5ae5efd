"""What a rollout moves, Machines or Clusters, seen the same way: when one is Ready, when it
runs a version healthily, and when its keeper says a version failed on it.

A rollout never judges a host or a control plane itself: the Machine-Operator and the
Cluster-Operator already run each step's verify and health checks, and record the outcome in
the object's status. The rollout reads those verdicts, which keeps one definition of healthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from kokpit.api.conditions import get, is_true
from kokpit.api.v1alpha1 import CLUSTERS, MACHINES
from kokpit.api.v1alpha1.machine import PACKAGES_INSTALLED
from kokpit.runtime import Resource

Object = dict[str, Any]


class Target(Protocol):
    """One kind of object a rollout moves."""

    @property
    def resource(self) -> Resource:
        """Where objects of the kind are."""
        ...

    def healthy_at(self, obj: Object, version: str) -> bool:
        """``obj`` runs ``version`` and its keeper finds it healthy."""
        ...

    def failure(self, obj: Object, version: str) -> str | None:
        """Why ``version`` failed on ``obj``, if its keeper says it did."""
        ...


def ready(obj: Object) -> bool:
    """Whether the object's Ready condition is True (for the scope's health before a batch)."""
    return is_true((obj.get("status") or {}).get("conditions") or [], "Ready")


def _observed(obj: Object) -> bool:
    """The keeper has seen the object's latest spec (so its status speaks of it)."""
    status = obj.get("status") or {}
    return bool(status.get("observedGeneration") == obj["metadata"].get("generation"))


@dataclass(frozen=True)
class MachineTarget:
    resource: Resource = MACHINES

    def healthy_at(self, obj: Object, version: str) -> bool:
        status = obj.get("status") or {}
        return _observed(obj) and status.get("packageVersion") == version and ready(obj)

    def failure(self, obj: Object, version: str) -> str | None:
        status = obj.get("status") or {}
        if not _observed(obj) or obj["spec"].get("packageVersion") != version:
            return None
        installed = get(status.get("conditions") or [], PACKAGES_INSTALLED) or {}
        if installed.get("status") == "False" and installed.get("reason") == "StepFailed":
            return f"a step of {version} failed: {installed.get('message', '')}"[:512]
        return None


@dataclass(frozen=True)
class ClusterTarget:
    resource: Resource = CLUSTERS

    def healthy_at(self, obj: Object, version: str) -> bool:
        status = obj.get("status") or {}
        return (
            _observed(obj)
            and status.get("packageVersion") == version
            and not status.get("step")
            and ready(obj)
        )

    def failure(self, obj: Object, version: str) -> str | None:
        if (obj.get("status") or {}).get("failedPackageVersion") == version:
            return f"the control plane failed its health checks on {version} and was rolled back"
        return None


TARGETS: dict[str, Target] = {"Machine": MachineTarget(), "Cluster": ClusterTarget()}
