"""What one reconcile of a Cluster works on: the object (a private copy, written at the end
and before each control-plane step), the package version it targets, and the facts phases
record for the status code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kokpit.providers.controlplane import ComponentHealth, ComponentName, ControlPlane
from kokpit.runtime import ObjectScope

Object = dict[str, Any]


@dataclass
class ClusterScope(ObjectScope):
    #: The ClusterPackageVersion being applied (spec's, or the last good one while rolling back).
    package: Object | None = None
    control_plane: ControlPlane | None = None
    health: dict[ComponentName, ComponentHealth] = field(default_factory=dict)
    #: Why the target cannot be applied (a missing package version, a disallowed skew).
    blocked: tuple[str, str] | None = None  # (reason, message)
    #: How many times the cluster's certificates were renewed (part of every component's plan).
    credentials: int = 0
    #: Why the control plane is Degraded (a spent restart budget, a crash loop), if it is.
    degraded: tuple[str, str] | None = None  # (reason, message)
    #: What kokpit does about each component that is not ready (a restart, a backoff).
    notes: dict[ComponentName, str] = field(default_factory=dict)

    @property
    def cluster(self) -> Object:
        return self.obj
