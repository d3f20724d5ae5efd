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

# The descriptors the client addresses these kinds with, derived from the types.
CLUSTER_PACKAGE_VERSIONS = CLUSTER_PACKAGE_VERSION.resource
CLUSTERS = CLUSTER.resource
MACHINE_PACKAGE_VERSIONS = MACHINE_PACKAGE_VERSION.resource
MACHINES = MACHINE.resource

__all__ = [
    "CLUSTER",
    "CLUSTERS",
    "CLUSTER_PACKAGE_VERSION",
    "CLUSTER_PACKAGE_VERSIONS",
    "GROUP",
    "KINDS",
    "MACHINE",
    "MACHINES",
    "MACHINE_PACKAGE_VERSION",
    "MACHINE_PACKAGE_VERSIONS",
    "VERSION",
    "ClusterPackageVersionSpec",
    "ClusterSpec",
    "ClusterStatus",
    "MachinePackageVersionSpec",
    "MachineSpec",
    "MachineStatus",
]
