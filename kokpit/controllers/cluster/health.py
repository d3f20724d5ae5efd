"""Keeping a control plane healthy once it ran: repairs within a restart budget.

A component that ran its plan and stopped being ready, with no step under way for it, is
*broken* rather than *changing*: it is not a step to record (nothing about what should run
changed) but a repair. What a repair does depends on the runtime:

- **process** (:class:`~kokpit.providers.controlplane.Restartable`): kokpit restarts the
  component itself. A dead process at once; one that runs but fails its health check after
  ``unhealthy_grace_seconds`` (it may only be waiting for etcd). Each restart waits a backoff
  that doubles with the restarts in the window, and at most ``restart_budget`` restarts are made
  within ``restart_window_seconds``. Once the budget is spent the Cluster turns Degraded, with
  an Event, and kokpit stops restarting the component until it is healthy again (someone
  fixed it) or the window has passed.
- **kubernetes**: the kubelet restarts containers; kokpit reports, and a container in
  CrashLoopBackOff turns the Cluster Degraded with the kubelet's reason.

Invariant: the restart times are written to the Cluster's status (``components[].restarts``)
*before* the restart is made, like a step's intent, so an operator that crashes — before or
after the restart — and its successor count the same restarts: the budget survives operator
restarts, and the backoff is derived from those times, never from memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from kokpit.api.conditions import get
from kokpit.api.v1alpha1.cluster import (
    CRASH_LOOP_BACK_OFF,
    DEGRADED,
    RESTART_BUDGET_EXHAUSTED,
)
from kokpit.controllers.cluster.options import ClusterOptions
from kokpit.controllers.cluster.scope import ClusterScope
from kokpit.providers.controlplane import (
    NOT_RUNNING,
    ComponentHealth,
    ComponentName,
    ComponentPlan,
    ControlPlaneRuntime,
    Restartable,
)

#: The most restart times kept per component (the status field's maxItems).
RESTARTS_KEPT = 32


@dataclass(frozen=True)
class RestartBudget:
    """How many restarts of one component, in which window, and the backoff between them."""

    restarts: int
    window: float
    backoff: float
    backoff_max: float

    @classmethod
    def of(cls, options: ClusterOptions) -> RestartBudget:
        return cls(
            options.restart_budget,
            options.restart_window_seconds,
            options.restart_backoff_seconds,
            options.restart_backoff_max_seconds,
        )


@dataclass(frozen=True)
class Decision:
    """What to do about a broken component now."""

    action: Literal["restart", "wait", "exhausted"]
    #: Seconds until that may change: the end of the backoff ("wait"), or until the oldest
    #: counted restart leaves the window ("exhausted").
    after: float = 0.0
    #: Restarts within the window (before this one).
    recent: int = 0


def decide(restarts: Sequence[float], now: float, budget: RestartBudget) -> Decision:
    """Restart now, wait for the backoff, or not at all (the budget is spent): from the times
    of the earlier restarts (seconds since the epoch) alone."""
    recent = sorted(t for t in restarts if now - t < budget.window)
    if budget.restarts <= 0:  # no restarts at all
        return Decision("exhausted", budget.window, len(recent))
    if len(recent) >= budget.restarts:
        # A restart is allowed again once enough of them have left the window.
        frees_at = recent[len(recent) - budget.restarts] + budget.window
        return Decision("exhausted", max(0.0, frees_at - now), len(recent))
    if recent:
        wait = min(budget.backoff_max, budget.backoff * 2 ** (len(recent) - 1))
        due = recent[-1] + wait
        if now < due:
            return Decision("wait", due - now, len(recent))
    return Decision("restart", 0.0, len(recent))


def broken(status: Mapping[str, Any], plan: ComponentPlan, health: ComponentHealth) -> bool:
    """Whether ``plan.name`` ran this very plan and stopped being ready with no step under way
    for it: a repair, not a step. (A component that never became ready is its step's business:
    the step's deadline and rollback handle it; a cluster whose last step Failed is not
    repaired by restarts, since what it runs never worked.)"""
    if health.ready or health.plan != plan.digest or status.get("phase") == "Failed":
        return False
    step = status.get("step") or {}
    return step.get("component") != plan.name


class Repairs:
    """Repairs a broken component (see the module docstring); one per operator."""

    def __init__(self, options: ClusterOptions, clock: Callable[[], float] = time.time) -> None:
        self._options = options
        self._budget = RestartBudget.of(options)
        self._clock = clock

    async def repair(
        self,
        scope: ClusterScope,
        runtime: ControlPlaneRuntime,
        plan: ComponentPlan,
        health: ComponentHealth,
    ) -> None:
        """Take the next step of repairing ``plan.name``, record what kokpit does about it in
        the scope (``notes``, ``degraded``), and ask to look again."""
        options, name, cp = self._options, plan.name, scope.control_plane
        if cp is None:
            return
        if not isinstance(runtime, Restartable):
            if health.reason == CRASH_LOOP_BACK_OFF:
                self._degrade(scope, CRASH_LOOP_BACK_OFF, f"{name}: {health.detail}")
            scope.notes[name] = "kokpit waits for its workload (the kubelet restarts containers)"
            scope.requeue(options.unhealthy_poll_interval)
            return
        entry = component_entry(scope.status, name)
        now = self._clock()
        if entry.get("ready", True) or not entry.get("unreadySince"):
            entry["unreadySince"] = timestamp(now)  # first seen unready now
        restarts = [seconds(t) for t in entry.get("restarts") or []]
        if health.reason != NOT_RUNNING:  # it runs: it may recover by itself
            since = max([seconds(entry["unreadySince"]), *restarts])
            left = options.unhealthy_grace_seconds - (now - since)
            if left > 0:
                scope.notes[name] = f"restarted if still failing in {left:.0f} s"
                scope.requeue(min(left, options.unhealthy_poll_interval))
                return
        decision = decide(restarts, now, self._budget)
        budget = f"{self._budget.restarts} restarts in {self._budget.window:.0f} s"
        if decision.action == "exhausted":
            message = (
                f"{name} is not ready ({health.detail or 'no detail'}) after {decision.recent} "
                f"restarts within {self._budget.window:.0f} s, its restart budget; kokpit "
                f"restarts it again once it has been healthy, or in {decision.after:.0f} s"
            )
            self._degrade(scope, RESTART_BUDGET_EXHAUSTED, message)
            scope.notes[name] = f"restart budget spent ({budget})"
            scope.requeue(min(max(decision.after, 0.1), options.unhealthy_poll_interval))
            return
        if decision.action == "wait":
            scope.notes[name] = f"restart in {decision.after:.0f} s (backoff)"
            scope.requeue(decision.after)
            return
        kept = [t for t in entry.get("restarts") or [] if now - seconds(t) < self._budget.window]
        entry["restarts"] = [*kept, timestamp(now)][-RESTARTS_KEPT:]
        count = decision.recent + 1
        scope.notes[name] = f"restarted ({count} of {budget})"
        await scope.persist()  # the restart is counted before it is made
        await runtime.restart(cp, name)
        message = f"{name}: {health.detail or 'not ready'}; restart {count} of {budget}"
        scope.event("Warning", "ComponentRestarted", message)
        scope.requeue(options.poll_interval)

    def _degrade(self, scope: ClusterScope, reason: str, message: str) -> None:
        """Degraded, with an Event when it turns so (or for another reason)."""
        scope.degraded = (reason, message)
        before = get(scope.status.get("conditions") or [], DEGRADED) or {}
        if before.get("status") != "True" or before.get("reason") != reason:
            scope.event("Warning", reason, message)


def component_entry(status: dict[str, Any], name: str) -> dict[str, Any]:
    """``status.components``' entry of ``name`` (added if missing), to record restarts in."""
    components: list[dict[str, Any]] = status.setdefault("components", None) or []
    status["components"] = components
    for entry in components:
        if entry.get("name") == name:
            return entry
    entry = {"name": name, "ready": False}
    components.append(entry)
    return entry


def component_statuses(
    previous: Sequence[Mapping[str, Any]],
    health: Mapping[ComponentName, ComponentHealth],
    notes: Mapping[ComponentName, str],
    now: str,
    *,
    forget_restarts: bool,
) -> list[dict[str, Any]]:
    """``status.components`` from this reconcile's health checks, keeping each component's
    restart times and since when it is unready; ``forget_restarts`` (the restart budget was
    spent) gives a component that is healthy again a fresh budget."""
    before = {str(c.get("name")): c for c in previous}
    out = []
    for name, h in health.items():
        prev = before.get(name) or {}
        entry: dict[str, Any] = {"name": name, "version": h.version or "", "ready": h.ready}
        restarts = [] if h.ready and forget_restarts else list(prev.get("restarts") or [])
        if not h.ready:
            note = notes.get(name)
            detail = h.detail or "not ready"
            entry["reason"] = h.reason or "NotReady"
            entry["message"] = f"{detail}; {note}" if note else detail
            entry["unreadySince"] = prev.get("unreadySince") or now
        if restarts:
            entry["restarts"] = restarts[-RESTARTS_KEPT:]
        out.append(entry)
    return out


def seconds(stamp: str) -> float:
    """An API timestamp as seconds since the epoch."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def timestamp(at: float) -> str:
    """Seconds since the epoch as an API timestamp."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
