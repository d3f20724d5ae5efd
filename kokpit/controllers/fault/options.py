"""The fault hub's settings, each with its default and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FaultOptions:
    #: A Node whose Ready condition is not True for this long is NodeNotReady: long enough for
    #: a kubelet restart, as long as the controller-manager's default node-monitor-grace-period.
    not_ready_grace: float = 40.0
    #: A Node Lease not renewed for this long is NodeLeaseStale (a kubelet renews every 10 s
    #: by default, its Lease lasting 40 s).
    lease_grace: float = 40.0
    #: How often each Machine's host is probed; each Machine's probe falls at its own stable
    #: point in the period, so the fleet's probes are spread over it, never all at once.
    probe_period: float = 60.0
    #: Probes running at once (each holds a connection to a host).
    probe_concurrency: int = 16
    #: A probe step longer than this is a failed probe (the package's own timeout if shorter).
    probe_timeout: float = 30.0
    #: A Machine's SSH credentials are read again after this long (a Secret read per probe
    #: would be a hundred and more reads a second at ten thousand hosts); a rotated key is
    #: used from the next read on.
    credentials_ttl: float = 600.0
    #: A fault that stays Active has its lastSeen written at most this often: at ten thousand
    #: nodes, writes must follow transitions, not observations.
    last_seen_interval: float = 300.0
    #: Cleared records are deleted this long after they cleared (their history with them).
    retention: float = 24 * 3600.0
    field_manager: str = "kokpit-fault-hub"
    max_concurrent_reconciles: int = 8
