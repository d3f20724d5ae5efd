"""Where a business cluster's control plane runs.

The Cluster-Operator decides *what* each component should run (version, flags) and in which
order; a :class:`ControlPlaneRuntime` makes one component so and reports its health. Every
method is idempotent and returns without waiting for health, so the operator stays
level-triggered: apply a step, requeue, read health, take the next step — and a restarted
operator simply applies the same step again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

ComponentName = Literal["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
#: Creation and upgrade order, as the version-skew policy requires; deletion is the reverse.
ORDER: tuple[ComponentName, ...] = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
)


@dataclass(frozen=True)
class ControlPlane:
    """The business cluster a runtime works on, and what all its components share."""

    #: The Cluster object's namespace, name and uid (what the runtime's objects are owned by).
    namespace: str
    name: str
    uid: str
    #: PEM files by name (``ca.crt``, ``apiserver.key``, ...), from the cluster's PKI Secret.
    pki: Mapping[str, bytes] = field(repr=False, default_factory=dict)
    service_cidr: str = "10.96.0.0/12"
    #: The range kube-controller-manager gives each node's podCIDR from.
    pod_cidr: str = "10.244.0.0/16"
    replicas: int = 1
    etcd_replicas: int = 1

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Probe:
    """The HTTP health check of a component (a package version's ``healthChecks`` entry)."""

    path: str
    timeout_seconds: int = 5
    failure_threshold: int = 3


#: Used when a package version names no health check for a component.
DEFAULT_PROBES: Mapping[ComponentName, Probe] = {
    "etcd": Probe("/health"),
    "kube-apiserver": Probe("/readyz"),
    "kube-controller-manager": Probe("/healthz"),
    "kube-scheduler": Probe("/healthz"),
}


@dataclass(frozen=True)
class ComponentPlan:
    name: ComponentName
    version: str
    flags: Mapping[str, str] = field(default_factory=dict)
    #: Container image (kubernetes runtime); empty means the upstream image of ``version``.
    image: str = ""
    #: How to tell the component is healthy; None means :data:`DEFAULT_PROBES`.
    probe: Probe | None = None
    #: Which renewal of the cluster's certificates the component must run with ("" for the
    #: first issue): renewed certificates are a plan change, rolled out like a version.
    credentials: str = ""

    @property
    def health_probe(self) -> Probe:
        return self.probe or DEFAULT_PROBES[self.name]

    @property
    def digest(self) -> str:
        """Identifies the whole plan: a change of flags, image or probe is a change, like a
        version."""
        probe = self.health_probe
        text = json.dumps(
            [
                self.name,
                self.version,
                sorted(self.flags.items()),
                self.image,
                [probe.path, probe.timeout_seconds, probe.failure_threshold],
                # Only once renewed, so plans from before renewals existed keep their digest.
                *([self.credentials] if self.credentials else []),
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Why a component is not ready (:attr:`ComponentHealth.reason`), as a CamelCase word.
#: Its process is gone (process runtime): restart it at once, within the budget.
NOT_RUNNING = "NotRunning"
#: It runs but fails its health check: give it time before restarting (it may wait on etcd).
UNHEALTHY = "Unhealthy"
#: Its workload does not exist (kubernetes runtime).
NOT_FOUND = "NotFound"
#: Fewer replicas ready than wanted (kubernetes runtime); the kubelet restarts containers.
REPLICAS_NOT_READY = "ReplicasNotReady"
#: A container keeps failing and the kubelet backs off restarting it (kubernetes runtime).
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"


@dataclass(frozen=True)
class ComponentHealth:
    ready: bool
    #: The version running now (None when the component does not run).
    version: str | None
    detail: str = ""
    #: The :attr:`ComponentPlan.digest` of what runs (None when unknown).
    plan: str | None = None
    #: Why it is not ready ("" when ready): one of the constants above.
    reason: str = ""


class PlanError(Exception):
    """The runtime cannot apply a plan (for example: no binaries for that version); the
    message is for a person and ends up in a condition, with :attr:`reason`."""

    reason = "CannotApply"


class ControlPlaneRuntime(Protocol):
    async def apply(self, cp: ControlPlane, plan: ComponentPlan) -> None:
        """Make ``plan.name`` run ``plan`` (start it, or replace what runs); do not wait."""

    async def health(self, cp: ControlPlane, name: ComponentName) -> ComponentHealth: ...

    async def endpoint(self, cp: ControlPlane) -> str | None:
        """The business API server's URL, once it has one."""

    async def delete(self, cp: ControlPlane) -> None:
        """Stop every component and delete everything the runtime made for ``cp``."""


@runtime_checkable
class Restartable(Protocol):
    """A runtime whose components kokpit itself restarts when they die (the ``process``
    runtime). The ``kubernetes`` runtime is not one: there the kubelet restarts containers, and
    kokpit only reports."""

    async def restart(self, cp: ControlPlane, name: ComponentName) -> None:
        """Stop ``name`` if it still runs and start it again with what it ran; do not wait."""
