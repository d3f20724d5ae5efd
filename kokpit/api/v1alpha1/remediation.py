"""Remediation: the workflow repairing one NodeFault, and its state.

Each step is recorded here before it runs, so an operator killed at any line resumes from this
record: an action whose attempt says Started ran (or may have run) and is never started again;
the restarted operator waits out its timeout for the node to recover instead. The workflow:

1. Cordon the node (``cordoned`` remembers that kokpit did it, so only then does it uncordon).
2. Migrate its pods: label them ``kokpit.io/migrate``, leave those whose own operator moves
   them (annotation ``kokpit.io/migration: operator``) to it, evict the rest within their
   PodDisruptionBudgets, and delete what is left after the policy's drain timeout.
3. Repair: the ladder's next action.
4. Verify: the fault cleared and the Node Ready for the policy's recovery time; if not within
   the step's timeout, back to 3 with the next rung.
5. Uncordon and close the fault.

When the ladder is exhausted the node stays cordoned and the remediation is Escalated: nothing
more is tried until a person resumes or closes it (``kokpit remediation resume|close``, which
set the annotation :data:`COMMAND_ANNOTATION`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kokpit.api.conditions import Condition
from kokpit.api.schema import Kind, PrinterColumn, Rule, field
from kokpit.api.v1alpha1.machine import LocalRef
from kokpit.api.v1alpha1.remediationpolicy import RepairAction, RepairStep

RemediationPhase = Literal[
    "Pending",
    "Cordoning",
    "Draining",
    "Repairing",
    "Verifying",
    "Uncordoning",
    "Succeeded",
    "Escalated",
    "Closed",
]
AttemptState = Literal["Started", "Succeeded", "Failed", "TimedOut"]

#: A person's command to an Escalated (or any unfinished) remediation: ``resume`` climbs the
#: ladder again from its first rung, ``close`` ends it (uncordoning what kokpit cordoned).
COMMAND_ANNOTATION = "kokpit.io/remediation-command"
#: On a Node kokpit cordoned: the Remediation that did, as ``namespace/name/uid``. Written in
#: the same request as the cordon, so that whoever finds the node cordoned (a restarted
#: operator among them) knows whether kokpit did it; removed with the uncordon.
CORDONED_BY = "kokpit.io/cordoned-by"
#: Set on pods the workflow migrates.
MIGRATE_LABEL = "kokpit.io/migrate"
#: Pods with this annotation set to ``operator`` are moved by their own operator, not evicted.
MIGRATION_ANNOTATION = "kokpit.io/migration"

#: How many attempts a Remediation's status keeps.
ATTEMPTS_MAX = 32

# Condition types.
CORDONED = "Cordoned"
DRAINED = "Drained"
REPAIRED = "Repaired"
ESCALATED = "Escalated"


@dataclass(kw_only=True)
class RemediationSpec:
    """What is repaired, under which policy; fixed when the remediation is created."""

    fault_ref: LocalRef = field("The NodeFault (in this namespace) being repaired.")
    machine_ref: LocalRef = field("Its Machine.")
    policy_ref: LocalRef = field("The RemediationPolicy whose ladder is climbed.")
    __rules__ = (Rule("self == oldSelf", "a Remediation's fault, machine and policy never change"),)


@dataclass(kw_only=True)
class Attempt:
    """One repair action: written as Started before it runs, finished after."""

    step: int = field("The rung of the ladder (from 0).", minimum=0)
    action: RepairAction = field("The action.")
    state: AttemptState = field(
        "Started (it ran or may have run: never started again, but for Reprovision, whose "
        "request is sent again with the same token, which the Machine-Operator serves once), "
        "Succeeded (the node "
        "recovered), Failed (the action reported an error) or TimedOut (the node did not "
        "recover within the step's timeout)."
    )
    started_at: str = field("When it was started.", format="date-time")
    finished_at: str | None = field("When it ended.", default=None, format="date-time")
    message: str = field("What the action or the check said.", default="", max_length=4096)
    reason: str | None = field(
        "Why a Failed action failed, in CamelCase (BMCAuthFailed, StepFailed, ...): the "
        "reason of the Repaired condition while this is the last attempt.",
        default=None,
        max_length=128,
    )


@dataclass(kw_only=True)
class Drain:
    """How the migration of the node's pods is going."""

    started_at: str | None = field("When eviction began.", default=None, format="date-time")
    pods_left: int = field("Pods still on the node that must leave.", default=0, minimum=0)
    blocked_by: list[str] = field(
        "PodDisruptionBudgets that refused an eviction, as namespace/name.",
        default_factory=list,
        max_items=32,
    )
    deleted: int = field(
        "Pods deleted after the drain timeout (they could not be evicted).", default=0, minimum=0
    )


@dataclass(kw_only=True)
class RemediationStatus:
    """Where the workflow is."""

    phase: RemediationPhase | None = field("The workflow's step.", default=None)
    node_name: str | None = field("The Node being repaired.", default=None)
    cluster_name: str | None = field("Its Cluster.", default=None)
    fault_type: str | None = field("The fault being repaired.", default=None)
    ladder: list[RepairStep] = field(
        "The policy's steps as they were when the remediation started: a policy edited "
        "meanwhile does not change a ladder being climbed.",
        default_factory=list,
        max_items=10,
    )
    step: int = field("The rung being tried or next to try.", default=0, minimum=0)
    cordoned: bool = field(
        "kokpit cordoned the node (a node someone else cordoned is never uncordoned); the "
        "node then carries the annotation kokpit.io/cordoned-by.",
        default=False,
    )
    drain: Drain | None = field("The migration of the node's pods.", default=None)
    attempts: list[Attempt] = field(
        f"The repair actions, oldest first (the last {ATTEMPTS_MAX}).",
        default_factory=list,
        max_items=ATTEMPTS_MAX,
    )
    started_at: str | None = field("When the workflow began.", default=None, format="date-time")
    finished_at: str | None = field(
        "When it Succeeded or was Closed.", default=None, format="date-time"
    )
    conditions: list[Condition] = field(
        "Cordoned, Drained, Repaired, Escalated.",
        default_factory=list,
        list_type="map",
        list_map_keys=("type",),
    )


REMEDIATION = Kind(
    group="kokpit.io",
    version="v1alpha1",
    kind="Remediation",
    plural="remediations",
    spec=RemediationSpec,
    status=RemediationStatus,
    short_names=("rem",),
    description="Remediation is the workflow repairing one NodeFault, and its state.",
    printer_columns=(
        PrinterColumn("Machine", ".spec.machineRef.name"),
        PrinterColumn("Fault", ".status.faultType"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Step", ".status.step", type="integer"),
        PrinterColumn("Action", ".status.attempts[-1:].action"),
        PrinterColumn("Policy", ".spec.policyRef.name", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", type="date"),
    ),
)
