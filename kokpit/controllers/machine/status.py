"""A Machine's conditions and phase, computed from what the phases recorded in the scope —
one pure function per condition type, and Ready summarised last."""

from __future__ import annotations

from typing import Literal

from kokpit.api.conditions import READY, get, is_true, set_condition, set_conditions
from kokpit.api.v1alpha1.machine import (
    GATES_PASSED,
    HOST_REACHABLE,
    NODE_JOINED,
    PACKAGES_INSTALLED,
)
from kokpit.controllers.machine.scope import MachineScope

#: The conditions this module computes; any other on a Machine is a mirrored readiness gate.
OWN_CONDITIONS = frozenset({READY, HOST_REACHABLE, PACKAGES_INSTALLED, NODE_JOINED, GATES_PASSED})

Status = Literal["True", "False", "Unknown"]
Condition = tuple[str, Status, str, str]  # type, status, reason, message


def host_reachable(scope: MachineScope) -> Condition | None:
    if scope.host_problem:
        return (HOST_REACHABLE, "False", *scope.host_problem)
    if scope.host is not None:  # steps ran
        return (HOST_REACHABLE, "True", "Connected", "")
    return None  # not contacted in this reconcile: keep what we knew


def packages_installed(scope: MachineScope) -> Condition:
    if scope.packages_problem:
        return (PACKAGES_INSTALLED, "False", *scope.packages_problem)
    operation = scope.status.get("lastOperation") or {}
    changing = scope.changing or (
        operation.get("package") if operation.get("result") == "Running" else None
    )
    if changing:
        # The applied version may still read as the wanted one (a host that drifted, or a
        # failed upgrade moved back): not up to date until this change has run and verified.
        # A change stored Running and not finished (its operator died, or the host went away
        # during it) counts until a check of the host settles it.
        return (PACKAGES_INSTALLED, "False", "Installing", f"{changing} is being changed")
    status = scope.status
    if status.get("packageVersion") == scope.spec["packageVersion"] and scope.package_version:
        return (PACKAGES_INSTALLED, "True", "UpToDate", f"{status['packageVersion']} is applied")
    return (PACKAGES_INSTALLED, "False", "Installing", "")


def node_joined(scope: MachineScope) -> Condition:
    if scope.node_problem and not scope.status.get("nodeName"):
        return (NODE_JOINED, "False", *scope.node_problem)
    if scope.status.get("nodeName"):
        return (NODE_JOINED, "True", "Registered", f"node {scope.status['nodeName']}")
    if scope.package_version is not None and not scope.has_kubelet:
        return (NODE_JOINED, "False", "NoKubelet", "the package version installs no kubelet")
    return (NODE_JOINED, "False", "WaitingForKubelet", "")


def gates_passed(scope: MachineScope) -> Condition | None:
    if scope.gates_passed is None:  # not evaluated in this reconcile
        if scope.status.get("nodeName"):
            return None
        return (GATES_PASSED, "Unknown", "NodeNotJoined", "")
    reason = "AllPassed" if scope.gates_passed else "GatesPending"
    return (
        GATES_PASSED,
        "True" if scope.gates_passed else "False",
        reason,
        scope.gates_message or "",
    )


def ready(scope: MachineScope) -> Condition:
    if scope.config_problem:  # a person must change the set-up; nothing else matters yet
        return (READY, "False", *scope.config_problem)
    if scope.deleting:
        reason, message = scope.node_problem or scope.host_problem or ("Deleting", "")
        return (READY, "False", reason, message)
    conditions = scope.status.get("conditions") or []
    needed = [PACKAGES_INSTALLED]
    if scope.has_kubelet:
        needed += [NODE_JOINED, GATES_PASSED]
    waiting = [t for t in needed if not is_true(conditions, t)]
    if not waiting:
        return (READY, "True", "Ready", "")
    first = get(conditions, waiting[0]) or {}
    return (READY, "False", NOT_READY_REASONS[waiting[0]], first.get("message", ""))


NOT_READY_REASONS = {
    PACKAGES_INSTALLED: "PackagesNotInstalled",
    NODE_JOINED: "NodeNotJoined",
    GATES_PASSED: "ReadinessGatesPending",
}


def phase(scope: MachineScope) -> str:
    if scope.deleting:
        return "Deleting"
    if scope.config_problem or (scope.host_problem and scope.host_problem[0] == "HostKeyMismatch"):
        return "Failed"
    applied = scope.status.get("packageVersion")
    if applied is None:
        return "Provisioning" if scope.package_version else "Pending"
    if applied != scope.spec["packageVersion"] or scope.packages_problem:
        return "Updating"
    return "Running"


def update(scope: MachineScope) -> None:
    """Write every condition, the phase and observedGeneration into the scope's status."""
    generation = scope.metadata.get("generation")
    status = scope.status
    for type_, report in scope.mirrored.items():
        status["conditions"] = set_condition(
            status.get("conditions") or [],
            type_,
            report.status,
            report.reason,
            report.message,
            generation=generation,
        )
    computed = (host_reachable, packages_installed, node_joined, gates_passed, ready)
    set_conditions(status, (f(scope) for f in computed), generation=generation)
    status["phase"] = phase(scope)
    status["observedGeneration"] = generation
