"""Cluster: one business cluster, whose control plane runs as workloads of the meta-cluster.

The Cluster-Operator drives the control plane to ``spec.packageVersion``: it creates it, upgrades
it component by component in version-skew order, rolls it back to the last good package
version when a health check fails, and deletes everything it owned when the Cluster goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kokpit.api import names
from kokpit.api.conditions import Condition
from kokpit.api.schema import Kind, PrinterColumn, Rule, field

# Condition types.
CONTROL_PLANE_AVAILABLE = "ControlPlaneAvailable"
UPGRADING = "Upgrading"
ROLLED_BACK = "RolledBack"
PACKAGE_VERSION_RESOLVED = "PackageVersionResolved"
#: True while a component stays broken in a way kokpit no longer repairs by itself: the
#: process runtime spent its restart budget on it, or (kubernetes runtime) the kubelet backs
#: off restarting its crashing container. Self-healing and the risk guard act on it.
DEGRADED = "Degraded"

# Degraded's reasons.
RESTART_BUDGET_EXHAUSTED = "RestartBudgetExhausted"
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
NOT_DEGRADED = "NotDegraded"

Phase = Literal[
    "Pending", "Provisioning", "Running", "Upgrading", "RollingBack", "Deleting", "Failed"
]
Runtime = Literal["kubernetes", "process"]

#: The objects named after a Cluster, ``<cluster>-<suffix>`` (see :func:`object_name`): the
#: longest each whole name may be, and why. The runtimes and the Cluster-Operator name them
#: with :func:`object_name`, and the CRD's limit on a Cluster's name is computed from this
#: table, so a name the API server accepts makes valid names everywhere.
DerivedSuffix = Literal[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubeconfigs",
    "pki",
    "admin-kubeconfig",
    "kokpit-kubeconfig",
    "bootstrap-token",
]
DERIVED_NAMES: dict[DerivedSuffix, tuple[int, str]] = {
    "etcd": (
        52,
        "the etcd StatefulSet, may be at most 52 characters (its pods' "
        "controller-revision-hash label is that name, '-' and a hash of up to 10 characters, "
        "and a label value is at most 63)",
    ),
    "kube-apiserver": (names.LABEL_MAX, "a Service, may be at most 63 characters"),
    "kube-controller-manager": (names.SUBDOMAIN_MAX, "a Deployment"),
    "kube-scheduler": (names.SUBDOMAIN_MAX, "a Deployment"),
    "kubeconfigs": (names.SUBDOMAIN_MAX, "a Secret"),
    "pki": (names.SUBDOMAIN_MAX, "a Secret"),
    "admin-kubeconfig": (names.SUBDOMAIN_MAX, "a Secret"),
    "kokpit-kubeconfig": (names.SUBDOMAIN_MAX, "a Secret"),
    "bootstrap-token": (names.SUBDOMAIN_MAX, "a Secret"),
}


def object_name(cluster: str, suffix: DerivedSuffix) -> str:
    """The name of the object ``suffix`` of Cluster ``cluster`` (e.g. ``c1-kube-apiserver``)."""
    return f"{cluster}-{suffix}"


def _name_limit() -> tuple[int, str]:
    """The longest Cluster name that keeps every derived name within its limit, and why."""
    limit, why = names.LABEL_MAX, "it is the value of the kokpit.io/cluster label"
    for suffix, (whole, what) in DERIVED_NAMES.items():
        room = whole - len(suffix) - 1
        if room < limit:
            limit, why = room, f"<name>-{suffix}, {what}"
    return limit, why


#: The longest name a Cluster may have (47: the etcd StatefulSet's name is the tightest).
NAME_MAX, _NAME_MAX_WHY = _name_limit()
NAME_RULES = (
    # Checked on create only (names cannot change), so a Cluster created before these rules
    # stays writable.
    Rule(
        f"oldSelf.hasValue() || size(self.metadata.name) <= {NAME_MAX}",
        f"a Cluster's name must be at most {NAME_MAX} characters: the objects of its control "
        f"plane are named after it, and {_NAME_MAX_WHY}",
        field_path=".metadata.name",
        optional_old_self=True,
    ),
    Rule(
        f"oldSelf.hasValue() || self.metadata.name.matches('{names.DNS1035_LABEL}')",
        "a Cluster's name must start with a lower-case letter and hold only lower-case "
        "letters, digits and '-' (no '.'): it begins the names of the control plane's "
        "Services (<name>-kube-apiserver, <name>-etcd), which must be DNS-1035 labels",
        field_path=".metadata.name",
        optional_old_self=True,
    ),
)

_CIDR_RULE = Rule("isCIDR(self)", "must be a CIDR such as 10.96.0.0/12")
#: The network address: ``10.96.0.1/12`` names the range ``10.96.0.0/12`` ambiguously (and
#: Python's ``ip_network``, like Kubernetes' ServiceCIDR validation, refuses it).
_NETWORK_ADDRESS_RULE = Rule(
    "!isCIDR(self) || cidr(self) == cidr(self).masked()",
    "must be a range's network address, with no host bits set (10.96.0.0/12, not 10.96.0.1/12)",
)


def _prefix_rule(family: int, shortest: int, longest: int, message: str) -> Rule:
    """The prefix length of an IPv``family`` range must be within [shortest, longest]."""
    return Rule(
        f"!isCIDR(self) || cidr(self).ip().family() != {family} || "
        f"(cidr(self).prefixLength() >= {shortest} && cidr(self).prefixLength() <= {longest})",
        message,
    )


#: The Secret types and names through which the Cluster-Operator hands out a business
#: cluster's credentials. Each is controlled by its Cluster; nothing else is trusted.
KUBECONFIG_SECRET_TYPE = "kokpit.io/kubeconfig"


def operator_kubeconfig_secret(cluster_name: str) -> str:
    """The Secret holding the kubeconfig of kokpit's own (least-privilege) identity in the
    business cluster; ``<cluster>-admin-kubeconfig`` is for people."""
    return object_name(cluster_name, "kokpit-kubeconfig")


#: The type of the Secret holding a business cluster's current bootstrap token, its API
#: server's URL and CA: what a host's kubelet joins with (see :mod:`kokpit.pki.bootstrap`).
BOOTSTRAP_TOKEN_SECRET_TYPE = "kokpit.io/bootstrap-token"


def bootstrap_token_secret(cluster_name: str) -> str:
    """The Secret the Machine-Operator builds hosts' bootstrap kubeconfigs from."""
    return object_name(cluster_name, "bootstrap-token")


@dataclass(kw_only=True)
class ControlPlane:
    """How many of each control-plane component run."""

    replicas: int = field(
        "kube-apiserver (and controller-manager, scheduler) replicas.",
        default=1,
        minimum=1,
        maximum=5,
    )
    etcd_replicas: int = field(
        "etcd members. Must be odd (1, 3, 5 or 7): etcd needs a majority to make progress, and "
        "an even count tolerates no more failures than the odd count below it.",
        default=1,
        minimum=1,
        maximum=7,
        rules=(
            Rule(
                "self % 2 == 1",
                "etcdReplicas must be odd (1, 3, 5 or 7) so that etcd keeps a quorum",
            ),
        ),
    )


@dataclass(kw_only=True)
class Network:
    """The business cluster's address ranges."""

    service_cidr: str = field(
        "ClusterIP range for Services: kube-apiserver's --service-cluster-ip-range. Its first "
        "address is the kubernetes Service's, and is in the API server's certificate. IPv4: "
        "/30 or wider (network and broadcast addresses are not used); IPv6: /64 to /126.",
        default="10.96.0.0/12",
        max_length=64,
        rules=(
            _CIDR_RULE,
            _NETWORK_ADDRESS_RULE,
            _prefix_rule(
                4,
                0,
                30,
                "an IPv4 serviceCIDR must be /30 or wider: without its network and broadcast "
                "addresses a /31 or /32 holds no Service IPs, not even the kubernetes Service's",
            ),
            _prefix_rule(
                6,
                64,
                126,
                "an IPv6 serviceCIDR must be between /64 (the widest kube-apiserver accepts) "
                "and /126 (room for the kubernetes Service and more)",
            ),
        ),
    )
    pod_cidr: str = field(
        "Range pod IPs are allocated from: kube-controller-manager's --cluster-cidr, from which "
        "it gives each node its podCIDR (a /24 for IPv4, a /64 for IPv6). IPv4: /24 or wider; "
        "IPv6: /48 to /64.",
        default="10.244.0.0/16",
        max_length=64,
        rules=(
            _CIDR_RULE,
            _NETWORK_ADDRESS_RULE,
            _prefix_rule(
                4,
                0,
                24,
                "an IPv4 podCIDR must be /24 or wider: kube-controller-manager gives each node "
                "a /24 of it",
            ),
            _prefix_rule(
                6,
                48,
                64,
                "an IPv6 podCIDR must be between /48 and /64: kube-controller-manager gives "
                "each node a /64 of it, and refuses a range more than 16 bits wider",
            ),
        ),
    )
    __rules__ = (
        Rule(
            # Checked only once both are CIDRs, so a malformed one gets one clear message.
            "!isCIDR(self.serviceCIDR) || !isCIDR(self.podCIDR) || "
            "(!cidr(self.serviceCIDR).containsCIDR(self.podCIDR) && "
            "!cidr(self.podCIDR).containsCIDR(self.serviceCIDR))",
            "serviceCIDR and podCIDR must not overlap",
        ),
    )


@dataclass(kw_only=True)
class ClusterSpec:
    """The desired state of a business cluster."""

    package_version: str = field(
        "Name of the ClusterPackageVersion to run. Changing it upgrades (or rolls back) the "
        "control plane component by component.",
        min_length=1,
        max_length=names.SUBDOMAIN_MAX,
        rules=(
            Rule(
                f"self.matches('{names.DNS1123_SUBDOMAIN}')",
                f"must be the name of a ClusterPackageVersion: {names.SUBDOMAIN_RULES}",
            ),
        ),
    )
    runtime: Runtime = field(
        "Where the control plane runs: kubernetes (Deployments and a StatefulSet in the "
        "meta-cluster) or process (local processes, for the embedded demo). Immutable.",
        default="kubernetes",
        rules=(Rule("self == oldSelf", "runtime cannot be changed after creation"),),
    )
    control_plane: ControlPlane = field("Replica counts.", default_factory=ControlPlane)
    network: Network = field("Address ranges.", default_factory=Network)
    paused: bool = field(
        "Stop reconciling this cluster (for maintenance); nothing is changed while paused.",
        default=False,
    )
    allow_version_skip: bool = field(
        "Allow an upgrade that skips a minor version, or a downgrade of more than one minor. "
        "Kubernetes does not support either; set only when you know why.",
        default=False,
    )


@dataclass(kw_only=True)
class ComponentStatus:
    """What one component runs now."""

    name: str = field("Component name.")
    version: str = field("Version running now.", default="")
    ready: bool = field("Whether its health checks pass.", default=False)
    reason: str | None = field(
        "Why it is not ready, in CamelCase: NotRunning (its process is gone), Unhealthy (it "
        "runs and fails its health check), NotFound, ReplicasNotReady or CrashLoopBackOff (its "
        "workload, kubernetes runtime). Absent when ready.",
        default=None,
        max_length=64,
    )
    message: str | None = field(
        "What is wrong, and what kokpit does about it, for a person. Absent when ready.",
        default=None,
        max_length=4096,
    )
    unready_since: str | None = field(
        "When it was first seen not ready, since it last was (absent when ready): a component "
        "that runs but fails its checks is restarted only after a grace period from here.",
        default=None,
        format="date-time",
    )
    restarts: list[str] = field(
        "When kokpit restarted this component (process runtime), oldest first: the restart "
        "budget counts those within its window, and the backoff before the next restart "
        "doubles with each. Kept in the status so that a restarted operator does not reset "
        "the budget.",
        default_factory=list,
        max_items=32,
        values={"format": "date-time"},
    )


@dataclass(kw_only=True)
class HistoryEntry:
    """A package version that was applied and became healthy."""

    package_version: str = field("The ClusterPackageVersion's name.")
    kubernetes_version: str = field("Its Kubernetes version.")
    applied_at: str = field("When it became healthy.", format="date-time")


@dataclass(kw_only=True)
class Step:
    """The control-plane change in progress, recorded before it is made (so a restarted
    operator resumes it rather than repeating or skipping it)."""

    component: str = field("The component being changed.")
    version: str = field("The version it is being moved to.")
    package_version: str = field("The package version this step belongs to.")
    started_at: str = field(
        "When the step started; its health deadline counts from here.", format="date-time"
    )


@dataclass(kw_only=True)
class SecretRef:
    """A Secret in the Cluster's namespace."""

    name: str = field("The Secret's name.")


@dataclass(kw_only=True)
class ClusterStatus:
    """The observed state of a business cluster."""

    phase: Phase | None = field("Where the cluster is in its lifecycle.", default=None)
    observed_generation: int | None = field("The generation last reconciled.", default=None)
    kubernetes_version: str | None = field("Kubernetes version the API server runs.", default=None)
    package_version: str | None = field("The package version applied now.", default=None)
    conditions: list[Condition] = field(
        "Ready, ControlPlaneAvailable, Degraded, Upgrading, RolledBack, PackageVersionResolved.",
        default_factory=list,
        list_type="map",
        list_map_keys=("type",),
    )
    components: list[ComponentStatus] = field(
        "Each component's running version and health, and kokpit's restarts of it.",
        default_factory=list,
    )
    endpoint: str | None = field("URL of the business cluster's API server.", default=None)
    admin_kubeconfig_secret_ref: SecretRef | None = field(
        "The Secret holding an admin kubeconfig for the business cluster.", default=None
    )
    step: Step | None = field("The change in progress, if any.", default=None)
    failed_package_version: str | None = field(
        "A package version that failed its health checks and was rolled back; it is not tried "
        "again until spec.packageVersion names a different one.",
        default=None,
    )
    history: list[HistoryEntry] = field(
        "Package versions applied, oldest first; a rollback returns to the last entry before "
        "the current one.",
        default_factory=list,
        max_items=32,
    )


CLUSTER = Kind(
    group="kokpit.io",
    version="v1alpha1",
    kind="Cluster",
    plural="clusters",
    spec=ClusterSpec,
    status=ClusterStatus,
    short_names=("kc",),
    description=(
        "Cluster is a business cluster whose control plane (etcd, kube-apiserver, "
        "kube-controller-manager, kube-scheduler) runs as workloads of the meta-cluster."
    ),
    printer_columns=(
        PrinterColumn("Version", ".status.kubernetesVersion"),
        PrinterColumn("Package", ".spec.packageVersion", priority=1),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn("Endpoint", ".status.endpoint", priority=1),
    ),
    rules=NAME_RULES,
)
