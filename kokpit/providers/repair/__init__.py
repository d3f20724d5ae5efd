"""Repair actions: the edge between a Remediation's ladder and the world that repairs a host.

The Remediation controller decides *which* action runs next and records it as Started before
it runs (so a restarted operator never runs it twice); a :class:`Repairer` only does it. Each
repairer owns some actions of :data:`kokpit.api.v1alpha1.remediationpolicy.RepairAction`:

- over the Machine's executor (SSH): restart the kubelet or the container runtime, reboot;
- by the Machine-Operator: re-provision the Machine's packages;
- through the Machine's BMC (Redfish): power cycle, reinstall from boot media;
- by people: open a ticket through a webhook.

A repairer returns once the action is *done* (the BMC accepted the reset, the ticket exists),
not once the node has recovered: whether it recovered is the controller's check, the same for
every action.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class RepairTarget:
    """What to repair: the Machine as stored (spec, labels: hostile input, validated by the
    API server), its Node, and the fault being repaired."""

    namespace: str
    machine: Mapping[str, Any] = field(repr=False)
    node_name: str
    cluster_name: str
    fault_type: str
    #: The Remediation's name, for tickets and logs.
    remediation: str
    #: The RemediationPolicy as stored, for repairers that act on its settings (the Ticket
    #: action posts to its ``spec.ticketWebhook``).
    policy: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: The Remediation's ``status.attempts`` so far, oldest first (tickets carry them).
    attempts: Sequence[Mapping[str, Any]] = ()
    #: Unique to this attempt (the Remediation's uid, the rung and the attempt's start): the
    #: token of a request a repairer may send again after a restart (Reprovision).
    attempt_id: str = ""
    #: When the attempt's rung times out (its start plus the rung's timeout); None: no bound.
    deadline: datetime | None = None

    def seconds_left(self) -> float:
        """Seconds until :attr:`deadline` (infinite without one; negative once past)."""
        if self.deadline is None:
            return float("inf")
        return (self.deadline - datetime.now(UTC)).total_seconds()

    @property
    def machine_name(self) -> str:
        return str(self.machine["metadata"]["name"])


class RepairError(Exception):
    """The action could not be done. The message is for a person and ends up in the
    Remediation's attempt and an Event, so it never quotes a Secret; ``reason`` is a CamelCase
    word for conditions."""

    reason = "RepairFailed"


class Repairer(Protocol):
    #: The actions this repairer does (RepairAction values).
    actions: frozenset[str]
    #: Those of its actions that may be asked again when an attempt is found Started after a
    #: restart: the repairer makes a repeat of the same attempt (same ``attempt_id``) harmless.
    #: Any other action is never run twice: the workflow waits for the node instead.
    repeatable: frozenset[str]

    async def repair(self, action: str, target: RepairTarget) -> str:
        """Do ``action`` on ``target``; returns what was done, for the attempt's message.
        Raises :class:`RepairError` when it could not be done."""
        ...
