"""The Cluster-Operator (cluster desired-state keeper)."""

from kokpit.controllers.cluster.controller import FINALIZER, setup
from kokpit.controllers.cluster.options import ClusterOptions

__all__ = ["FINALIZER", "ClusterOptions", "setup"]
