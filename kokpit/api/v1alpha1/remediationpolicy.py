"""RemediationPolicy: how the faults of some Machines are repaired.

A policy selects Machines of its namespace by label and maps fault types to a ladder of repair
actions, tried in order until the node is healthy again (as medik8s NodeHealthCheck's
escalating remediations do): restart the kubelet or the container runtime, reboot,
re-provision the Machine's packages, power-cycle or reinstall through the BMC, open a ticket.
When the ladder is exhausted the remediation is Escalated and waits for a person.

It also holds the storm stop: when too many of a scope's nodes look unhealthy at once (a
network partition, a broken switch, a faulty detector) repairing them would make things worse,
so no remediation starts until the scope is healthy enough again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kokpit.api import names
from kokpit.api.conditions import Condition
from kokpit.api.schema import Kind, PrinterColumn, Rule, field
from kokpit.api.v1alpha1.machine import LocalRef
from kokpit.api.v1alpha1.nodefault import FaultType
from kokpit.api.v1alpha1.selector import LabelSelector

RepairAction = Literal[
    "RestartKubelet",
    "RestartContainerRuntime",
    "Reboot",
    "Reprovision",
    "PowerCycle",
    "Reinstall",
    "Ticket",
]
#: Actions that go through the Machine's BMC (``spec.bmc`` of the Machine).
BMC_ACTIONS = ("PowerCycle", "Reinstall")

# Condition types.
STORM_STOPPED = "StormStopped"


@dataclass(kw_only=True)
class RepairStep:
    """One rung of the ladder: an action, and how long the node has to recover after it."""

    action: RepairAction = field(
        "What to do: RestartKubelet and RestartContainerRuntime and Reboot run over the "
        "Machine's executor; Reprovision reapplies its MachinePackageVersion; PowerCycle and "
        "Reinstall go through its BMC; Ticket asks people through the ticket webhook."
    )
    timeout_seconds: int = field(
        "How long after the action the node has to be healthy again (the fault cleared and "
        "the Node Ready for recoverySeconds) before the next rung is tried.",
        default=600,
        minimum=10,
        maximum=604800,
    )


@dataclass(kw_only=True)
class Webhook:
    """An HTTPS endpoint kokpit POSTs a JSON document to."""

    url: str = field(
        "The endpoint, https only.",
        max_length=2048,
        rules=(
            Rule(
                "isURL(self) && url(self).getScheme() == 'https'",
                "must be an https URL such as https://tickets.example.com/hooks/kokpit",
            ),
        ),
    )
    ca_bundle: str | None = field(
        "PEM certificates that sign the endpoint's certificate; unset: the system's.",
        default=None,
        max_length=65536,
    )
    secret_ref: LocalRef | None = field(
        "Secret whose key `token` is sent as a bearer token; never logged.", default=None
    )


@dataclass(kw_only=True)
class StormStop:
    """When no remediation may start."""

    max_concurrent: int = field(
        "Remediations of this policy in progress at once, fleet-wide; more wait (Pending).",
        default=5,
        minimum=1,
        maximum=10000,
    )
    min_healthy_percent: int = field(
        "Share of a scope's nodes that must be healthy for a remediation in it to start. "
        "Below it nothing starts in the scope, and the policy's StormStopped condition says "
        "where and why.",
        default=70,
        minimum=0,
        maximum=100,
    )
    scope_label: str | None = field(
        "The node label whose value names a failure domain (such as "
        "topology.kubernetes.io/zone); unset: the scope is the Machine's Cluster.",
        default=None,
        max_length=names.QUALIFIED_NAME_MAX,
        rules=(
            Rule(
                names.is_qualified_name("self"),
                f"scopeLabel must be a label key: {names.QUALIFIED_NAME_RULES}",
            ),
        ),
    )


@dataclass(kw_only=True)
class RemediationPolicySpec:
    """Which Machines and faults, and how they are repaired."""

    machine_selector: LabelSelector = field(
        "The Machines of this namespace the policy covers; empty: all of them."
    )
    fault_types: list[FaultType] = field(
        "The faults it repairs.", min_items=1, max_items=32, list_type="set"
    )
    steps: list[RepairStep] = field(
        "The ladder, tried in order until the node recovers.", min_items=1, max_items=10
    )
    recovery_seconds: int = field(
        "How long the fault must stay cleared and the Node Ready to count as recovered.",
        default=60,
        minimum=0,
        maximum=86400,
    )
    drain_timeout_seconds: int | None = field(
        "How long pods are evicted within their PodDisruptionBudgets; then the pods left are "
        "deleted. Unset: never deleted, the drain waits (and says what holds it).",
        default=600,
        minimum=0,
        maximum=604800,
    )
    storm_stop: StormStop = field("When no remediation may start.", default_factory=StormStop)
    ticket_webhook: Webhook | None = field(
        "Where the Ticket action opens a ticket. Required when a step is Ticket.", default=None
    )
    escalation_webhook: Webhook | None = field(
        "Told when a remediation is Escalated (besides its condition, Event and metric).",
        default=None,
    )
    __rules__ = (
        Rule(
            "!self.steps.exists(s, s.action == 'Ticket') || has(self.ticketWebhook)",
            "a Ticket step needs spec.ticketWebhook: where to open the ticket",
        ),
    )


@dataclass(kw_only=True)
class RemediationPolicyStatus:
    """What the policy is doing."""

    observed_generation: int | None = field("The generation last acted on.", default=None)
    in_progress: int = field("Remediations of this policy in progress.", default=0, minimum=0)
    conditions: list[Condition] = field(
        "StormStopped: True while some scope is below minHealthyPercent, with which.",
        default_factory=list,
        list_type="map",
        list_map_keys=("type",),
    )


REMEDIATION_POLICY = Kind(
    group="kokpit.io",
    version="v1alpha1",
    kind="RemediationPolicy",
    plural="remediationpolicies",
    spec=RemediationPolicySpec,
    status=RemediationPolicyStatus,
    short_names=("rp",),
    description="RemediationPolicy maps the faults of some Machines to a ladder of repairs.",
    printer_columns=(
        PrinterColumn("Steps", ".spec.steps[*].action"),
        PrinterColumn("In-Progress", ".status.inProgress", type="integer"),
        PrinterColumn("Storm-Stopped", '.status.conditions[?(@.type=="StormStopped")].status'),
        PrinterColumn("Age", ".metadata.creationTimestamp", type="date"),
    ),
)
