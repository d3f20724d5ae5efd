"""A Cluster's conditions, computed from what the phases recorded in the scope — one pure
function per condition type, and Ready summarised last."""

from __future__ import annotations

from typing import Literal

from kokpit.api.conditions import READY, is_true, set_condition
from kokpit.api.v1alpha1.cluster import (
    CONTROL_PLANE_AVAILABLE,
    PACKAGE_VERSION_RESOLVED,
    ROLLED_BACK,
    UPGRADING,
)
from kokpit.controllers.cluster.scope import ClusterScope

Status = Literal["True", "False", "Unknown"]
Condition = tuple[str, Status, str, str]  # type, status, reason, message


def package_version_resolved(scope: ClusterScope) -> Condition:
    if scope.blocked and scope.blocked[0] == "NotFound":
        return (PACKAGE_VERSION_RESOLVED, "False", "NotFound", scope.blocked[1])
    return (PACKAGE_VERSION_RESOLVED, "True", "Found", "")


def control_plane_available(scope: ClusterScope) -> Condition:
    if (
        not scope.health
        and scope.blocked
        and scope.blocked[0] in ("RuntimeNotEnabled", "Forbidden")
    ):
        return (CONTROL_PLANE_AVAILABLE, "False", *scope.blocked)
    if not scope.health:
        return (CONTROL_PLANE_AVAILABLE, "Unknown", "NotChecked", "health was not checked")
    bad = [f"{n}: {h.detail or 'not ready'}" for n, h in scope.health.items() if not h.ready]
    if bad:
        return (CONTROL_PLANE_AVAILABLE, "False", "ComponentsNotReady", "; ".join(bad))
    return (CONTROL_PLANE_AVAILABLE, "True", "Healthy", "every component passes its checks")


def upgrading(scope: ClusterScope) -> Condition:
    step = scope.status.get("step")
    if scope.blocked and scope.blocked[0] != "NotFound":  # skew, failed health, cannot apply
        # A step may be recorded and blocked (its apply refused): the block is the news.
        return (UPGRADING, "False", scope.blocked[0], scope.blocked[1])
    if step:
        message = f"{step['component']} → {step['version']} ({step['packageVersion']})"
        return (UPGRADING, "True", "StepInProgress", message)
    return (UPGRADING, "False", "UpToDate", "")


def rolled_back(scope: ClusterScope) -> Condition:
    failed = scope.status.get("failedPackageVersion")
    if failed:
        running = scope.status.get("packageVersion")
        message = f"{failed} failed its health checks; the cluster runs {running}"
        return (ROLLED_BACK, "True", "HealthCheckFailed", message)
    return (ROLLED_BACK, "False", "NoRollback", "")


def ready(scope: ClusterScope) -> Condition:
    conditions = scope.status.get("conditions") or []
    ok = (
        is_true(conditions, PACKAGE_VERSION_RESOLVED)
        and is_true(conditions, CONTROL_PLANE_AVAILABLE)
        and scope.status.get("phase") == "Running"
    )
    if ok:
        return (READY, "True", "Running", "")
    return (READY, "False", str(scope.status.get("phase") or "Pending"), "")


def update(scope: ClusterScope) -> None:
    """Write every condition and observedGeneration into the scope's status."""
    generation = scope.cluster["metadata"].get("generation")
    status = scope.status
    if scope.blocked and scope.blocked[0] == "NotFound" and not status.get("packageVersion"):
        status["phase"] = "Pending"
    for compute in (
        package_version_resolved,
        control_plane_available,
        upgrading,
        rolled_back,
        ready,
    ):
        type_, value, reason, message = compute(scope)
        status["conditions"] = set_condition(
            status.get("conditions") or [],
            type_,
            value,
            reason,
            message,
            generation=generation,
        )
    if scope.health:
        status["components"] = [
            {"name": n, "version": h.version or "", "ready": h.ready}
            for n, h in scope.health.items()
        ]
    status["observedGeneration"] = generation
