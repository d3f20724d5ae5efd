"""Machine: one host of a business cluster, kept at a MachinePackageVersion.

The Machine-Operator works out what differs between the packages on the host (their check
steps) and the desired MachinePackageVersion, applies the difference in order, and records it.
Installing the kubelet package makes the host a Node; the node stays unschedulable until every
condition in ``readinessGates`` is True.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kokpit.api import names
from kokpit.api.conditions import CONDITION_TYPE_PATTERN, Condition
from kokpit.api.schema import Kind, PrinterColumn, Rule, each, field

# Condition types.
HOST_REACHABLE = "HostReachable"
PACKAGES_INSTALLED = "PackagesInstalled"
NODE_JOINED = "NodeJoined"
GATES_PASSED = "ReadinessGatesPassed"

#: A request to re-provision the host: its packages are installed again, each with its install
#: step even when its check says it is there (then verified and checked), whatever their
#: versions. The value is a token unique to the request (the Remediation workflow writes one per
#: Reprovision attempt); the Machine-Operator serves each token once and records it in
#: ``status.reprovisioned``. A token equal to that is served already: writing it again does
#: nothing, so a requester that restarts may always write its token again.
REPROVISION_ANNOTATION = "kokpit.io/reprovision"
#: The longest token :data:`REPROVISION_ANNOTATION` may carry (a longer one is refused, with an
#: Event, and never served).
REPROVISION_TOKEN_MAX = 253

MachinePhase = Literal["Pending", "Provisioning", "Running", "Updating", "Deleting", "Failed"]

#: Node conditions the kubelet (or KWOK) owns: no readiness gate may name them.
KUBELET_CONDITIONS = frozenset(
    {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"}
)
#: A namespace: a DNS label (RFC 1123), so it holds no dot.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A ServiceAccount's name: a DNS subdomain (RFC 1123).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
NAME_RULES = (
    # On create only (names cannot change), so a Machine created before the rule stays writable.
    Rule(
        f"oldSelf.hasValue() || size(self.metadata.name) <= {names.LABEL_MAX}",
        f"a Machine's name must be at most {names.LABEL_MAX} characters: it becomes its Node's "
        "name and the value of the Node's kubernetes.io/hostname label, which is at most 63",
        field_path=".metadata.name",
        optional_old_self=True,
    ),
)
_SUBDOMAIN_RULE = Rule(
    f"self.matches('{names.DNS1123_SUBDOMAIN}')",
    f"must be an object's name: {names.SUBDOMAIN_RULES}",
)


@dataclass(kw_only=True)
class LocalRef:
    """An object in the Machine's namespace."""

    name: str = field(
        "Its name.", min_length=1, max_length=names.SUBDOMAIN_MAX, rules=(_SUBDOMAIN_RULE,)
    )


@dataclass(kw_only=True)
class Taint:
    """A taint the node is registered with."""

    key: str = field(
        "The taint key, a qualified name such as example.com/dedicated.",
        min_length=1,
        max_length=names.QUALIFIED_NAME_MAX,
        rules=(
            Rule(
                names.is_qualified_name("self"),
                f"a taint key must be {names.QUALIFIED_NAME_RULES}",
            ),
        ),
    )
    value: str = field(
        "The taint value.",
        default="",
        max_length=names.LABEL_MAX,
        rules=(
            Rule(
                names.is_label_value("self"),
                f"a taint value must be {names.LABEL_VALUE_RULES}",
            ),
        ),
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = field("The effect.")


@dataclass(kw_only=True)
class Reporter:
    """The ServiceAccount of the operator that reports a gate's condition.

    Only what this ServiceAccount writes under its own key of the node's Condition ConfigMap,
    ``<namespace>.<name>``, counts for the gate; the API server lets no one else write that key.
    """

    namespace: str = field(
        "The ServiceAccount's namespace.", min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN
    )
    name: str = field(
        "The ServiceAccount's name.", min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN
    )


@dataclass(kw_only=True)
class ReadinessGate:
    """A node condition that must be True before the node may take workloads."""

    condition_type: str = field(
        "The node condition type, reported in the node's Condition ConfigMap by the operator "
        "that owns it (e.g. network.example.com/Ready).",
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
        rules=(
            Rule(
                "!(self in [" + ", ".join(f"'{c}'" for c in sorted(KUBELET_CONDITIONS)) + "])",
                "is a condition the kubelet owns: a readiness gate needs a condition type of its "
                "own, e.g. example.com/NetworkReady",
            ),
        ),
    )
    reporter: Reporter = field(
        "The ServiceAccount that reports this condition: the gate passes only on its report, "
        "whoever else reports the same condition type."
    )
    mode: Literal["Bootstrap", "Continuous"] = field(
        "Bootstrap gates only hold a new node back; Continuous gates also make a Ready node "
        "unschedulable again when they turn False.",
        default="Continuous",
    )


@dataclass(kw_only=True)
class BMC:
    """The host's baseboard management controller, spoken to over Redfish: power cycles and
    reinstalls from boot media go through it."""

    address: str = field(
        "The Redfish service's base URL, https only (such as https://10.0.0.5:8000).",
        max_length=2048,
        rules=(
            Rule(
                "isURL(self) && url(self).getScheme() == 'https'",
                "must be an https URL such as https://bmc-1.example.com",
            ),
        ),
    )
    system_id: str = field(
        "The Redfish System of this host (such as /redfish/v1/Systems/1).",
        min_length=1,
        max_length=512,
        pattern=r"^/redfish/v1/Systems/[A-Za-z0-9][-A-Za-z0-9_.]*$",
    )
    credentials_secret_ref: LocalRef = field(
        "Secret with the BMC's username and password; never logged."
    )
    insecure_skip_verify: bool = field(
        "Skip verifying the BMC's TLS certificate. Off by default: set it only for a BMC "
        "whose self-signed certificate cannot be given in caBundle.",
        default=False,
    )
    ca_bundle: str | None = field(
        "PEM certificates that sign the BMC's certificate; unset: the system's.",
        default=None,
        max_length=65536,
    )
    reinstall_image: str | None = field(
        "The URL of the installer image the Reinstall action boots from (virtual media).",
        default=None,
        max_length=2048,
        rules=(
            Rule(
                "isURL(self) && url(self).getScheme() in ['http', 'https']",
                "must be an http or https URL of an installer image",
            ),
        ),
    )


@dataclass(kw_only=True)
class MachineSpec:
    """The desired state of a host."""

    cluster_ref: LocalRef = field("The Cluster whose node this host becomes.")
    address: str = field(
        "The host's IP address or DNS name.",
        min_length=1,
        max_length=names.SUBDOMAIN_MAX,
        rules=(
            Rule(
                f"isIP(self) || self.matches('{names.DNS1123_SUBDOMAIN}')",
                "must be an IP address or a DNS name (lower-case letters, digits and '-' in "
                "labels joined by '.', such as node-1.example.com)",
            ),
        ),
    )
    port: int = field("SSH port.", default=22, minimum=1, maximum=65535)
    ssh_secret_ref: LocalRef | None = field(
        "Secret with the SSH credentials: username, privateKey, and knownHosts, the pinned "
        "host key. A host whose key does not match is refused, never trusted on first use. "
        "Required with the ssh executor.",
        default=None,
    )
    package_version: str = field(
        "Name of the MachinePackageVersion to apply.",
        min_length=1,
        max_length=names.SUBDOMAIN_MAX,
        rules=(_SUBDOMAIN_RULE,),
    )
    executor: Literal["ssh", "sim"] = field(
        "How steps run: ssh on the real host, or sim (a simulated host, for scale tests).",
        default="ssh",
    )
    node_labels: dict[str, str] = field(
        "Labels the node is registered with: keys are qualified names (example.com/rack), "
        "values at most 63 characters.",
        default_factory=dict,
        max_properties=64,
        rules=(
            Rule(
                f"self.all(k, {names.is_qualified_name('k')})",
                f"every label key must be {names.QUALIFIED_NAME_RULES}",
                message_expression=names.concat(
                    names.cel_string('label key "'),
                    names.first("self", "k", "!" + names.is_qualified_name("k")),
                    names.cel_string(f'" is invalid: it must be {names.QUALIFIED_NAME_RULES}'),
                ),
            ),
        ),
        values=each(
            max_length=names.LABEL_MAX,
            rules=(
                Rule(
                    names.is_label_value("self"),
                    f"a label value must be {names.LABEL_VALUE_RULES}",
                ),
            ),
        ),
    )
    taints: list[Taint] = field(
        "Taints the node is registered with.", default_factory=list, max_items=32
    )
    readiness_gates: list[ReadinessGate] = field(
        "Every node condition that must be True before the node is schedulable.",
        default_factory=list,
        max_items=32,
        list_type="map",
        list_map_keys=("conditionType",),
    )
    bmc: BMC | None = field(
        "The host's BMC, for repairs that need it (PowerCycle, Reinstall); unset: none.",
        default=None,
    )
    drain_timeout_seconds: int | None = field(
        "How long a delete waits for the node's pods to be evicted (PodDisruptionBudgets may "
        "hold them back), counted from the deletion; then the pods left are named in an Event "
        "and the delete goes on. Unset: wait as long as it takes.",
        default=None,
        minimum=0,
        maximum=604800,
    )
    host_cleanup_timeout_seconds: int | None = field(
        "How long a delete keeps trying to remove the packages from a host it cannot reach, "
        "counted from the deletion; then the packages are left on the host and an Event says "
        "so. Unset: wait for the host. The annotation kokpit.io/skip-host-cleanup=true skips "
        "the removal at once.",
        default=None,
        minimum=0,
        maximum=604800,
    )
    __rules__ = (
        Rule(
            "self.executor != 'ssh' || has(self.sshSecretRef)",
            "spec.sshSecretRef is required with the ssh executor: name the Secret holding "
            "username, privateKey and knownHosts",
        ),
    )


@dataclass(kw_only=True)
class InstalledPackage:
    """A package as found on the host by its check step."""

    name: str = field("Package name.")
    version: str = field("Installed version (empty: not installed).", default="")


@dataclass(kw_only=True)
class Operation:
    """The last step run on the host."""

    package: str = field("The package.")
    step: Literal["check", "install", "upgrade", "remove", "verify"] = field("The step.")
    result: Literal["Running", "Succeeded", "Failed"] = field("How it ended.")
    message: str = field(
        "The tail of the step's stderr when it failed.", default="", max_length=4096
    )
    started_at: str = field("When it started.", format="date-time")
    finished_at: str | None = field("When it ended.", default=None, format="date-time")


@dataclass(kw_only=True)
class MachineStatus:
    """The observed state of a host."""

    phase: MachinePhase | None = field("Where the machine is in its lifecycle.", default=None)
    observed_generation: int | None = field("The generation last reconciled.", default=None)
    node_name: str | None = field("The Node this host registered as.", default=None)
    package_version: str | None = field(
        "The MachinePackageVersion last applied in full: its remove steps are the ones used "
        "for packages that the desired version no longer has.",
        default=None,
    )
    bootstrapped: bool = field(
        "Every readiness gate has passed once since the node joined; from then on only "
        "Continuous gates can make it unschedulable again.",
        default=False,
    )
    packages: list[InstalledPackage] = field(
        "Each package's installed version.", default_factory=list
    )
    last_operation: Operation | None = field("The last step run on the host.", default=None)
    reprovisioned: str | None = field(
        "The last re-provisioning request served: the token of the annotation "
        "kokpit.io/reprovision, recorded once every package was installed again.",
        default=None,
        max_length=REPROVISION_TOKEN_MAX,
    )
    conditions: list[Condition] = field(
        "Ready, HostReachable, PackagesInstalled, NodeJoined, ReadinessGatesPassed, and the "
        "readiness gates mirrored from the node.",
        default_factory=list,
        list_type="map",
        list_map_keys=("type",),
    )


MACHINE = Kind(
    group="kokpit.io",
    version="v1alpha1",
    kind="Machine",
    plural="machines",
    spec=MachineSpec,
    status=MachineStatus,
    short_names=("km",),
    description="Machine is one host of a business cluster, kept at a MachinePackageVersion.",
    printer_columns=(
        PrinterColumn("Cluster", ".spec.clusterRef.name"),
        PrinterColumn("Address", ".spec.address"),
        PrinterColumn("Node", ".status.nodeName"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn("Packages", ".spec.packageVersion", priority=1),
    ),
    rules=NAME_RULES,
)
