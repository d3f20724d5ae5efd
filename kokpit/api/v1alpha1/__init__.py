"""kokpit.io/v1alpha1: the meta-cluster's custom resources."""

from kokpit.api.v1alpha1.cluster import CLUSTER, ClusterSpec, ClusterStatus
from kokpit.api.v1alpha1.clusterpackageversion import (
    CLUSTER_PACKAGE_VERSION,
    ClusterPackageVersionSpec,
)
from kokpit.api.v1alpha1.machine import MACHINE, MachineSpec, MachineStatus
from kokpit.api.v1alpha1.machinepackageversion import (
    MACHINE_PACKAGE_VERSION,
    MachinePackageVersionSpec,
)

GROUP = "kokpit.io"
VERSION = "v1alpha1"
KINDS = (CLUSTER_PACKAGE_VERSION, CLUSTER, MACHINE_PACKAGE_VERSION, MACHINE)

__all__ = [
    "CLUSTER",
    "CLUSTER_PACKAGE_VERSION",
    "GROUP",
    "KINDS",
    "MACHINE",
    "MACHINE_PACKAGE_VERSION",
    "VERSION",
    "ClusterPackageVersionSpec",
    "ClusterSpec",
    "ClusterStatus",
    "MachinePackageVersionSpec",
    "MachineSpec",
    "MachineStatus",
]
