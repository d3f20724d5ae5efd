"""kokpit.io/v1alpha1: the meta-cluster's custom resources."""

from kokpit.api.v1alpha1.cluster import CLUSTER, ClusterSpec, ClusterStatus
from kokpit.api.v1alpha1.clusterpackageversion import (
    CLUSTER_PACKAGE_VERSION,
    ClusterPackageVersionSpec,
)

GROUP = "kokpit.io"
VERSION = "v1alpha1"
KINDS = (CLUSTER_PACKAGE_VERSION, CLUSTER)

__all__ = [
    "CLUSTER",
    "CLUSTER_PACKAGE_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "ClusterPackageVersionSpec",
    "ClusterSpec",
    "ClusterStatus",
]
