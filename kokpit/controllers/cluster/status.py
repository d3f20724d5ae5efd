"""A Cluster's conditions, computed from what the phases recorded in the scope — one pure
function per condition type, and Ready summarised last."""

from __future__ import annotations

from typing import Literal

from kokpit.api.conditions import READY, get, is_true, now, set_conditions
from kokpit.api.v1alpha1.cluster import (
    CONTROL_PLANE_AVAILABLE,
    DEGRADED,
    NOT_DEGRADED,
    PACKAGE_VERSION_RESOLVED,
    RESTART_BUDGET_EXHAUSTED,
    ROLLED_BACK,
    UPGRADING,
)
from kokpit.controllers.cluster.health import component_statuses
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
    bad = [
        f"{n}: {h.detail or 'not ready'}" + (f" ({scope.notes[n]})" if n in scope.notes else "")
        for n, h in scope.health.items()
        if not h.ready
    ]
    if bad:
        return (CONTROL_PLANE_AVAILABLE, "False", "ComponentsNotReady", "; ".join(bad))
    return (CONTROL_PLANE_AVAILABLE, "True", "Healthy", "every component passes its checks")


def degraded(scope: ClusterScope) -> Condition:
    """True while a component stays broken and kokpit no longer repairs it (see
    :mod:`.health`); kept as it was when this reconcile did not check the components."""
    if scope.degraded:
        return (DEGRADED, "True", *scope.degraded)
    before = get(scope.status.get("conditions") or [], DEGRADED)
    if not scope.health and before is not None:
        return (DEGRADED, before["status"], before["reason"], before.get("message", ""))
    return (DEGRADED, "False", NOT_DEGRADED, "")


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
    available = get(conditions, CONTROL_PLANE_AVAILABLE) or {}
    if scope.status.get("phase") == "Running" and available.get("status") == "False":
        # Running, and a component broke: say which, and why.
        return (READY, "False", available["reason"], available.get("message", ""))
    return (READY, "False", str(scope.status.get("phase") or "Pending"), "")


def update(scope: ClusterScope) -> None:
    """Write every condition and observedGeneration into the scope's status."""
    generation = scope.cluster["metadata"].get("generation")
    status = scope.status
    spent = get(status.get("conditions") or [], DEGRADED) or {}
    forget_restarts = spent.get("reason") == RESTART_BUDGET_EXHAUSTED and not scope.degraded
    if scope.blocked and scope.blocked[0] == "NotFound" and not status.get("packageVersion"):
        status["phase"] = "Pending"
    conditions = (
        package_version_resolved,
        control_plane_available,
        degraded,
        upgrading,
        rolled_back,
        ready,
    )
    set_conditions(status, (f(scope) for f in conditions), generation=generation)
    if scope.health:
        status["components"] = component_statuses(
            status.get("components") or [],
            scope.health,
            scope.notes,
            now(),
            forget_restarts=forget_restarts,
        )
    status["observedGeneration"] = generation
