"""The Cluster-Operator (cluster desired-state keeper)."""

from kokpit.controllers.cluster.controller import (
    CLUSTERS,
    FINALIZER,
    PACKAGE_VERSIONS,
    ClusterOptions,
    ClusterReconciler,
    setup,
)

__all__ = [
    "CLUSTERS",
    "FINALIZER",
    "PACKAGE_VERSIONS",
    "ClusterOptions",
    "ClusterReconciler",
    "setup",
]
