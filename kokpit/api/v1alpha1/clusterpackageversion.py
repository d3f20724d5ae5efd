"""ClusterPackageVersion: one tested combination of control-plane component versions.

Cluster-scoped and immutable once created: a Cluster that points at a package version gets
exactly what was tested, and a rollback returns to exactly what ran before. A new combination
is a new ClusterPackageVersion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kokpit.api.schema import Kind, PrinterColumn, Rule, field

VERSION_PATTERN = r"^v[0-9]+\.[0-9]+\.[0-9]+$"

Component = Literal["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]


@dataclass(kw_only=True)
class Resources:
    """Compute resources for a component's pods (kubernetes runtime only)."""

    requests: dict[str, str] = field(
        "Minimum resources, e.g. {cpu: 100m, memory: 256Mi}.",
        default_factory=dict,
        max_properties=8,
    )
    limits: dict[str, str] = field("Maximum resources.", default_factory=dict, max_properties=8)


@dataclass(kw_only=True)
class ComponentSpec:
    """How to run one control-plane component."""

    version: str = field(
        "The component's version, e.g. v1.36.3 (or v3.6.8 for etcd).", pattern=VERSION_PATTERN
    )
    image: str = field(
        "Container image for the kubernetes runtime; the process runtime ignores it and runs "
        "the cached binary of this version.",
        default="",
        max_length=512,
    )
    flags: dict[str, str] = field(
        "Extra command-line flags, name (without --) to value, added to or overriding the "
        "defaults kokpit sets.",
        default_factory=dict,
        max_properties=64,
        rules=(
            Rule(
                "self.all(k, !k.startsWith('-'))",
                "flag names are written without leading dashes, e.g. v: '2'",
            ),
        ),
    )
    resources: Resources = field(
        "Compute resources for the kubernetes runtime.", default_factory=Resources
    )


@dataclass(kw_only=True)
class Components:
    """The four control-plane components."""

    etcd: ComponentSpec = field("The etcd cluster that stores the business cluster's state.")
    kube_apiserver: ComponentSpec = field("The business cluster's API server.")
    kube_controller_manager: ComponentSpec = field("The controller manager.")
    kube_scheduler: ComponentSpec = field("The scheduler.")


@dataclass(kw_only=True)
class HealthCheck:
    """A check that says a component is good; upgrades wait for it after every step."""

    component: Component = field("The component checked.")
    path: str = field("HTTP path probed, e.g. /readyz or /livez.", pattern=r"^/", max_length=256)
    timeout_seconds: int = field("How long one probe may take.", default=5, minimum=1, maximum=60)
    failure_threshold: int = field(
        "Consecutive failures after which the component is unhealthy (and an upgrade step "
        "rolls back).",
        default=3,
        minimum=1,
        maximum=100,
    )
    deadline_seconds: int = field(
        "How long after a change the component has to become healthy before the change is "
        "declared failed.",
        default=300,
        minimum=10,
        maximum=3600,
    )


@dataclass(kw_only=True)
class ClusterPackageVersionSpec:
    """The versions and settings of a business cluster's control plane."""

    kubernetes_version: str = field(
        "The Kubernetes release this package is, e.g. v1.36.3; the version-skew checks on "
        "upgrade compare these.",
        pattern=VERSION_PATTERN,
    )
    components: Components = field("Each control-plane component's version and settings.")
    health_checks: list[HealthCheck] = field(
        "The checks that say a control plane built from this package is good.",
        default_factory=list,
        max_items=16,
    )


CLUSTER_PACKAGE_VERSION = Kind(
    group="kokpit.io",
    version="v1alpha1",
    kind="ClusterPackageVersion",
    plural="clusterpackageversions",
    spec=ClusterPackageVersionSpec,
    status=None,
    scope="Cluster",
    short_names=("cpv",),
    description=(
        "ClusterPackageVersion is one tested combination of control-plane component versions "
        "and settings. It is immutable: to change anything, create a new one and point "
        "Clusters at it."
    ),
    printer_columns=(
        PrinterColumn("Kubernetes", ".spec.kubernetesVersion", description="Kubernetes release"),
        PrinterColumn("Etcd", ".spec.components.etcd.version", description="etcd version"),
    ),
    rules=(
        Rule(
            "!has(oldSelf.spec) || self.spec == oldSelf.spec",
            "a ClusterPackageVersion's spec is immutable; create a new ClusterPackageVersion "
            "and point the Cluster at it",
            field_path=".spec",
        ),
    ),
)
