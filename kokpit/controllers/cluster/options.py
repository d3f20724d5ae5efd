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
    #: Lifetime of a bootstrap token (what a host's kubelet joins with): a leaked one is good
    #: for this long at most. kubeadm's default.
    bootstrap_token_ttl_seconds: float = 24 * 3600.0
    #: A successor token is issued once this share of a token's life has passed, so a host
    #: that fetched the old one still has a third of its life to join with it.
    bootstrap_token_renew_share: float = 2 / 3
