"""Cluster: one business cluster, whose control plane runs as workloads of the meta-cluster.

The Cluster-Operator drives the control plane to ``spec.packageVersion``: it creates it, upgrades
it component by component in version-skew order, rolls it back to the last good package
version when a health check fails, and deletes everything it owned when the Cluster goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kokpit.api.conditions import Condition
from kokpit.api.schema import Kind, PrinterColumn, Rule, field

# Condition types.
CONTROL_PLANE_AVAILABLE = "ControlPlaneAvailable"
UPGRADING = "Upgrading"
ROLLED_BACK = "RolledBack"
PACKAGE_VERSION_RESOLVED = "PackageVersionResolved"

Phase = Literal[
    "Pending", "Provisioning", "Running", "Upgrading", "RollingBack", "Deleting", "Failed"
]
Runtime = Literal["kubernetes", "process"]

_CIDR_RULE = Rule("isCIDR(self)", "must be a CIDR such as 10.96.0.0/12")


#: The Secret types and names through which the Cluster-Operator hands out a business
#: cluster's credentials. Each is controlled by its Cluster; nothing else is trusted.
KUBECONFIG_SECRET_TYPE = "kokpit.io/kubeconfig"


def operator_kubeconfig_secret(cluster_name: str) -> str:
    """The Secret holding the kubeconfig of kokpit's own (least-privilege) identity in the
    business cluster; ``<cluster>-admin-kubeconfig`` is for people."""
    return f"{cluster_name}-kokpit-kubeconfig"


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
        "ClusterIP range for Services.", default="10.96.0.0/12", max_length=64, rules=(_CIDR_RULE,)
    )
    pod_cidr: str = field(
        "Range pod IPs are allocated from.",
        default="10.244.0.0/16",
        max_length=64,
        rules=(_CIDR_RULE,),
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
        max_length=253,
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
        "Ready, ControlPlaneAvailable, Upgrading, RolledBack, PackageVersionResolved.",
        default_factory=list,
        list_type="map",
        list_map_keys=("type",),
    )
    components: list[ComponentStatus] = field(
        "Each component's running version.", default_factory=list
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
)
