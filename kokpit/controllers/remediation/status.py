"""A Remediation's conditions, computed from its status and what the phases recorded: one pure
function per condition type (Cordoned, Drained, Repaired, Escalated). A condition a phase has
not reached yet is left out; one it has passed keeps saying how it ended."""

from __future__ import annotations

from typing import Literal

from kokpit.api.conditions import get, set_conditions
from kokpit.api.v1alpha1.remediation import CORDONED, DRAINED, ESCALATED, REPAIRED
from kokpit.controllers.remediation.scope import RemediationScope

Status = Literal["True", "False", "Unknown"]
Condition = tuple[str, Status, str, str]  # type, status, reason, message

_ORDER = (
    None,
    "Pending",
    "Cordoning",
    "Draining",
    "Repairing",
    "Verifying",
    "Uncordoning",
    "Succeeded",
)


def _reached(scope: RemediationScope, phase: str) -> bool:
    """The workflow got to ``phase`` (Escalated and Closed count as past Draining)."""
    current = scope.phase
    if current in ("Escalated", "Closed"):
        return phase in ("Cordoning", "Draining", "Repairing")
    return _ORDER.index(current) >= _ORDER.index(phase) if current in _ORDER else False


def cordoned(scope: RemediationScope) -> Condition | None:
    if not _reached(scope, "Cordoning"):
        return None
    if scope.phase == "Cordoning":
        return (CORDONED, "False", *(scope.problem or ("Cordoning", "")))
    if scope.phase in ("Succeeded", "Closed") or (
        scope.phase == "Uncordoning" and not scope.status.get("cordoned")
    ):
        return (CORDONED, "False", "Uncordoned", "the node is back in service")
    if scope.status.get("cordoned"):
        return (CORDONED, "True", "CordonedByKokpit", f"node {scope.node_name}")
    return (
        CORDONED,
        "True",
        "CordonedBefore",
        f"node {scope.node_name} was cordoned already: kokpit will not uncordon it",
    )


def drained(scope: RemediationScope) -> Condition | None:
    if not _reached(scope, "Draining"):
        return None
    drain = scope.status.get("drain") or {}
    if scope.phase == "Draining":
        if scope.problem:
            return (DRAINED, "False", *scope.problem)
        blocked = drain.get("blockedBy") or []
        if blocked:
            message = "eviction refused by PodDisruptionBudget " + ", ".join(blocked)
            return (DRAINED, "False", "DrainBlocked", message)
        return (DRAINED, "False", "Draining", f"{drain.get('podsLeft', 0)} pods left")
    deleted = int(drain.get("deleted") or 0)
    message = f"{deleted} pods deleted after the drain timeout" if deleted else ""
    return (DRAINED, "True", "Drained", message)


def repaired(scope: RemediationScope) -> Condition | None:
    if not _reached(scope, "Repairing"):
        return None
    last = scope.last_attempt or {}
    summary = f"{last.get('action')} (rung {last.get('step')}): {last.get('message', '')}"
    # A failed action says why in its own words (BMCAuthFailed, ...) until the next one starts.
    failed = str(last.get("reason") or "RepairFailed") if last.get("state") == "Failed" else None
    if scope.phase in ("Repairing", "Verifying"):
        if scope.problem:
            return (REPAIRED, "False", *scope.problem)
        reason = "Verifying" if scope.phase == "Verifying" else failed or "Repairing"
        return (REPAIRED, "False", reason, summary if last else "")
    if scope.phase == "Escalated":
        return (REPAIRED, "False", failed or "LadderExhausted", f"last: {summary}")
    if scope.phase == "Closed":
        return (REPAIRED, "False", "Closed", "closed by a person")
    return (REPAIRED, "True", "Recovered", summary)


def escalated(scope: RemediationScope) -> Condition | None:
    if scope.phase == "Escalated":
        tried = ", ".join(str(a.get("action")) for a in scope.attempts[-10:])
        message = (
            f"every rung of the ladder was tried ({tried}); node {scope.node_name} stays "
            "cordoned until a person runs kokpit remediation resume or close"
        )
        return (ESCALATED, "True", "LadderExhausted", message)
    if get(scope.status.get("conditions") or [], ESCALATED) is not None:
        reason = "Closed" if scope.phase == "Closed" else "Resumed"
        return (ESCALATED, "False", reason, "a person took over")
    return None


def update(scope: RemediationScope) -> None:
    """Write every condition into the scope's status."""
    computed = (f(scope) for f in (cordoned, drained, repaired, escalated))
    set_conditions(scope.status, computed, generation=scope.metadata.get("generation"))
