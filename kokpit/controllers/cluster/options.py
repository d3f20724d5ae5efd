"""The Cluster-Operator's settings, each with its default and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterOptions:
    #: How often to look at a control-plane step in progress.
    poll_interval: float = 1.0
    #: How often to retry a cluster whose control plane failed and could not roll back.
    failed_retry_interval: float = 30.0
    field_manager: str = "kokpit-cluster-operator"
    max_concurrent_reconciles: int = 8
    #: Lifetime of a business cluster's leaf certificates; they are renewed (and the
    #: components restarted one at a time) when a third of it is left. Its CA lasts 10 years.
    leaf_validity_seconds: float = 90 * 24 * 3600.0
    #: How often a Running cluster is looked at again when nothing changed.
    resync_interval: float = 300.0
