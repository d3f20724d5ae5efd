"""NodeFault: the fault hub's record of one kind of fault on one Machine.

Every detector (node conditions written by node-problem-detector or kokpit's node agent, the
Node's Ready condition and Lease, kokpit's own probes over the Machine's executor) reports into
one NodeFault per Machine and fault type. Its name is fixed by the two,
``<machine>.<type in lower case>``, and the API server holds every NodeFault to that name, so
two detectors reporting the same fault at once cannot make two records: the second create is a
conflict and becomes an update. A fault that clears and comes back (flaps) stays one record;
its ``count`` grows and its ``history`` keeps the last transitions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kokpit.api.conditions import Condition
from kokpit.api.schema import Kind, PrinterColumn, Rule, field
from kokpit.api.v1alpha1.machine import LocalRef

#: Fault types node-problem-detector's default configuration writes as Node conditions, so a
#: fleet already running it works unchanged.
NPD_FAULTS = (
    "KernelDeadlock",
    "ReadonlyFilesystem",
    "FrequentKubeletRestart",
    "FrequentContainerdRestart",
    "FrequentDockerRestart",
    "FrequentUnregisterNetDevice",
    "CorruptDockerOverlay2",
)
#: Hardware faults kokpit's node agent writes as Node conditions of its own Node.
HARDWARE_FAULTS = ("DiskFailure", "MemoryECCError", "NICFailure", "GPUFailure")
#: Faults kokpit finds itself: the Node's Ready condition and Lease, and probes of the host.
MONITOR_FAULTS = (
    "NodeNotReady",
    "NodeLeaseStale",
    "HostUnreachable",
    "KubeletUnhealthy",
    "ContainerRuntimeUnhealthy",
)
#: Every fault type: NodeFaults and RemediationPolicies name no other.
FAULT_TYPES = NPD_FAULTS + HARDWARE_FAULTS + MONITOR_FAULTS
#: Node condition types that are faults when True (the node's own condition names them).
NODE_CONDITION_FAULTS = NPD_FAULTS + HARDWARE_FAULTS

FaultType = Literal[
    "KernelDeadlock",
    "ReadonlyFilesystem",
    "FrequentKubeletRestart",
    "FrequentContainerdRestart",
    "FrequentDockerRestart",
    "FrequentUnregisterNetDevice",
    "CorruptDockerOverlay2",
    "DiskFailure",
    "MemoryECCError",
    "NICFailure",
    "GPUFailure",
    "NodeNotReady",
    "NodeLeaseStale",
    "HostUnreachable",
    "KubeletUnhealthy",
    "ContainerRuntimeUnhealthy",
]
FaultSource = Literal["NodeCondition", "NodeReady", "NodeLease", "Probe"]
FaultState = Literal["Active", "Cleared"]

#: How many transitions a NodeFault's history keeps.
HISTORY_MAX = 16

# Condition types.
REMEDIATED = "Remediated"


def fault_name(machine: str, fault_type: str) -> str:
    """The one name a Machine's NodeFault of ``fault_type`` may have."""
    return f"{machine}.{fault_type.lower()}"


@dataclass(kw_only=True)
class NodeFaultSpec:
    """Which fault on which Machine; both fixed when the record is created."""

    machine_ref: LocalRef = field("The Machine (in this namespace) whose host has the fault.")
    type: FaultType = field("The kind of fault.")
    __rules__ = (
        Rule(
            "self == oldSelf",
            "a NodeFault's machine and type never change: a different fault is another record",
        ),
    )


@dataclass(kw_only=True)
class FaultTransition:
    """One change of a fault's state, as a detector saw it."""

    state: FaultState = field("The state the fault went to.")
    source: FaultSource = field("The detector that saw it.")
    time: str = field("When.", format="date-time")
    message: str = field("What the detector said.", default="", max_length=1024)


@dataclass(kw_only=True)
class NodeFaultStatus:
    """What the detectors have seen of the fault."""

    state: FaultState | None = field(
        "Active while a detector reports the fault; Cleared once none does.", default=None
    )
    cluster_name: str | None = field("The Machine's Cluster.", default=None)
    node_name: str | None = field("The Machine's Node.", default=None)
    source: FaultSource | None = field("The detector that reported it last.", default=None)
    message: str = field("What that detector said.", default="", max_length=1024)
    first_seen: str | None = field("When it was first reported.", default=None, format="date-time")
    last_seen: str | None = field("When it was last reported.", default=None, format="date-time")
    count: int = field(
        "How many times it became Active: more than one means it flaps.", default=0, minimum=0
    )
    history: list[FaultTransition] = field(
        f"The last {HISTORY_MAX} transitions, oldest first.",
        default_factory=list,
        max_items=HISTORY_MAX,
    )
    remediation: str | None = field(
        "The Remediation (in this namespace) handling the fault, if one was started.",
        default=None,
    )
    conditions: list[Condition] = field(
        "Remediated: whether a remediation brought the node back.",
        default_factory=list,
        list_type="map",
        list_map_keys=("type",),
    )


NODE_FAULT = Kind(
    group="kokpit.io",
    version="v1alpha1",
    kind="NodeFault",
    plural="nodefaults",
    spec=NodeFaultSpec,
    status=NodeFaultStatus,
    short_names=("nf",),
    description="NodeFault is the fault hub's record of one kind of fault on one Machine.",
    printer_columns=(
        PrinterColumn("Machine", ".spec.machineRef.name"),
        PrinterColumn("Node", ".status.nodeName"),
        PrinterColumn("Type", ".spec.type"),
        PrinterColumn("State", ".status.state"),
        PrinterColumn("Count", ".status.count", type="integer"),
        PrinterColumn("Source", ".status.source"),
        PrinterColumn("Last-Seen", ".status.lastSeen", type="date"),
        PrinterColumn("Remediation", ".status.remediation", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", type="date"),
    ),
    rules=(
        Rule(
            "self.metadata.name == self.spec.machineRef.name + '.' + self.spec.type.lowerAscii()",
            "a NodeFault is named <machine>.<type in lower case> (for example "
            "node-1.kerneldeadlock): one record per Machine and fault type",
            field_path=".metadata.name",
        ),
    ),
)
