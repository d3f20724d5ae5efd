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

    # -- keeping Ready control planes healthy (see :mod:`.health`) --------------------------
    #: Restarts of one component that kokpit makes within ``restart_window_seconds``; one
    #: more failure turns the Cluster Degraded and kokpit stops restarting it (a component
    #: that dies at every start would otherwise be restarted for ever, hiding the fault).
    restart_budget: int = 5
    restart_window_seconds: float = 600.0
    #: The wait before a restart: ``restart_backoff_seconds`` after the first restart in the
    #: window, doubling with each one, at most ``restart_backoff_max_seconds``.
    restart_backoff_seconds: float = 1.0
    restart_backoff_max_seconds: float = 60.0
    #: How long a component that runs but fails its health check is left alone before it is
    #: restarted (it may only be waiting for etcd or the API server to come back).
    unhealthy_grace_seconds: float = 30.0
    #: How often an unhealthy cluster is looked at while kokpit waits (backoff, grace, a
    #: kubelet restarting containers, a spent budget).
    unhealthy_poll_interval: float = 5.0
    #: How often each Ready cluster of the process runtime has its components probed: the
    #: probes of all clusters are spread over this interval, ``probe_concurrency`` at a time.
    probe_interval: float = 2.0
    probe_concurrency: int = 16
    #: Failed probes in a row before a component that runs is reported (a dead process is
    #: reported at once).
    probe_failure_threshold: int = 3
