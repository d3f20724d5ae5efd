"""What one reconcile of a Cluster works on: the object (a private copy, written once at the
end), the package version it targets, and the facts phases record for the status code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kokpit.providers.controlplane import ComponentHealth, ComponentName, ControlPlane

Object = dict[str, Any]


@dataclass
class ClusterScope:
    cluster: Object
    #: The ClusterPackageVersion being applied (spec's, or the last good one while rolling back).
    package: Object | None = None
    control_plane: ControlPlane | None = None
    health: dict[ComponentName, ComponentHealth] = field(default_factory=dict)
    #: Why the target cannot be applied (a missing package version, a disallowed skew).
    blocked: tuple[str, str] | None = None  # (reason, message)
    requeue_after: float | None = None

    @property
    def spec(self) -> Object:
        spec: Object = self.cluster["spec"]
        return spec

    @property
    def status(self) -> Object:
        status: Object = self.cluster.setdefault("status", {})
        return status

    @property
    def key(self) -> str:
        meta = self.cluster["metadata"]
        return f"{meta['namespace']}/{meta['name']}"

    def requeue(self, seconds: float) -> None:
        """Ask to look again in ``seconds``; the smallest request of all phases wins."""
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds
