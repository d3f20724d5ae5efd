"""The guard: every risky action asks it first, and reports when the action is done.

An operator about to delete a node, drain it, reboot, power-cycle, reinstall or re-provision a
host, or take a step of a control-plane upgrade calls :meth:`Guard.acquire` with a request that
names the action and a key unique to it (stable across a restart of the caller, so asking
again after a crash is answered from the record instead of spending the budget twice), acts
only when allowed, and calls :meth:`Guard.release` with the outcome. The budgets are
RiskPolicies (:mod:`kokpit.api.v1alpha1.riskpolicy`); what was spent lives in their
RiskLedgers in the API server (:mod:`.local`), so the answers hold across replicas and across
operators.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kokpit.api.v1alpha1.riskpolicy import RiskyAction
from kokpit.providers.guard.budget import Outcome


@dataclass(frozen=True)
class RiskRequest:
    """A risky action about to be taken."""

    action: RiskyAction
    #: Unique to this action and stable across restarts of the caller (such as the
    #: Remediation's uid and attempt): a repeated ask with it is the same ask.
    id: str
    #: What it acts on, for people: ``Machine fleet/rack1-node7``.
    target: str
    #: The target's Cluster, ``namespace/name`` (policies scoped per Cluster count by it).
    cluster: str | None = None
    #: The target node's labels (policies scoped per failure domain read theirs).
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Who asks, when a guard asks for someone else (the guard's HTTPS endpoint: the caller
    #: the API server authenticated); None: the guard's own requester.
    requester: str | None = None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    #: Why, for a condition or an Event; names the policies that decided.
    reason: str
    #: When asking again may be allowed; None: not before something else changes.
    retry_after: float | None = None


#: The reason of the condition and Event that say an action waits for the guard.
GUARD_DENIED = "GuardDenied"


def held(verdict: Verdict, what: str, *, at_least: float, at_most: float) -> tuple[str, float]:
    """For an action the guard refused: the message saying why ``what`` waits, and when to ask
    again — when the policy says, but within [``at_least``, ``at_most``] seconds (a policy
    changed or deleted meanwhile is no event of the waiting object's)."""
    wait = verdict.retry_after if verdict.retry_after is not None else at_most
    return f"{what} waits: {verdict.reason}", min(max(wait, at_least), at_most)


class Guard(Protocol):
    async def acquire(self, request: RiskRequest) -> Verdict: ...

    async def assess(self, request: RiskRequest) -> Verdict:
        """What :meth:`acquire` would answer now, spending nothing (a dry run)."""
        ...

    async def release(self, request: RiskRequest, outcome: Outcome) -> None: ...


__all__ = ["GUARD_DENIED", "Guard", "Outcome", "RiskRequest", "Verdict", "held"]
