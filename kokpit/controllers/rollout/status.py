"""A Rollout's conditions, computed from its status and what the phases recorded.

``Progressing`` says whether it moves and, if not, why; ``ScopeHealthy`` the health check
before the current batch; ``AnalysisPassing`` the current batch's measurements; ``RolledBack``
whether an abort has returned everything it changed.
"""

from __future__ import annotations

from typing import Literal

from kokpit.api.conditions import get, set_conditions
from kokpit.api.v1alpha1.rollout import (
    ANALYSIS_PASSING,
    PROGRESSING,
    ROLLED_BACK,
    SCOPE_HEALTHY,
)
from kokpit.controllers.rollout.scope import RolloutScope

Status = Literal["True", "False", "Unknown"]
Condition = tuple[str, Status, str, str]


def progressing(scope: RolloutScope) -> Condition:
    phase, batch = scope.phase, scope.status.get("batches") and scope.batch
    if phase == "Progressing" and batch:
        return (
            PROGRESSING,
            "True",
            f"Batch{batch['state']}",
            f"batch {scope.index}: {batch.get('message') or batch['state']}",
        )
    if phase == "Paused":
        reason = str(scope.status.get("pausedReason") or "PausedByPerson")
        return (PROGRESSING, "False", reason, (batch or {}).get("message") or "")
    if phase == "Succeeded":
        return (PROGRESSING, "False", "Succeeded", f"every object runs {scope.version}")
    if phase in ("RollingBack", "Aborted"):
        return (PROGRESSING, "False", "Aborted", str(scope.status.get("abortReason") or ""))
    return (PROGRESSING, "Unknown", "Starting", "")


def scope_healthy(scope: RolloutScope) -> Condition | None:
    if scope.unhealthy is not None:
        return (SCOPE_HEALTHY, "False", *scope.unhealthy)
    if (
        scope.phase == "Progressing"
        and scope.status.get("batches")
        and scope.batch["state"] != ("Waiting")
    ):
        return (SCOPE_HEALTHY, "True", "Healthy", "")
    return None  # not checked in this reconcile: keep what we knew


def analysis_passing(scope: RolloutScope) -> Condition | None:
    if not scope.spec.get("analysis") or not scope.status.get("batches"):
        return None
    batch = scope.batch
    failed, errors = batch.get("failedMeasurements") or 0, batch.get("errorMeasurements") or 0
    rounds = batch.get("measured") or 0
    counts = f"batch {scope.index}: {rounds} round(s), {failed} failed, {errors} not taken"
    if failed and scope.phase in ("RollingBack", "Aborted"):
        return (ANALYSIS_PASSING, "False", "MetricFailed", counts)
    if errors and scope.phase == "Paused":
        return (ANALYSIS_PASSING, "Unknown", "Inconclusive", counts)
    return (ANALYSIS_PASSING, "True", "Passing", counts)


def rolled_back(scope: RolloutScope) -> Condition | None:
    if scope.phase == "RollingBack":
        return (ROLLED_BACK, "False", "RollingBack", str(scope.status.get("abortReason") or ""))
    if scope.phase == "Aborted" and scope.behind is not None:
        if scope.behind:
            return (ROLLED_BACK, "False", "RollbackIncomplete", scope.behind)
        return (ROLLED_BACK, "True", "RolledBack", "every changed object is back and Ready")
    return None


def update(scope: RolloutScope) -> None:
    status = scope.status
    computed = (f(scope) for f in (progressing, scope_healthy, analysis_passing, rolled_back))
    set_conditions(status, computed, generation=scope.metadata.get("generation"))
    if scope.phase == "Progressing" and get(status.get("conditions") or [], ROLLED_BACK):
        status["conditions"] = [c for c in status["conditions"] if c["type"] != ROLLED_BACK]
    status["observedGeneration"] = scope.metadata.get("generation")
