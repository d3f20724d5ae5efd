"""The Machine-Operator's settings, each with its default and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MachineOptions:
    #: How often a Running machine's packages are checked again (drift on the host).
    recheck_interval: float = 600.0
    #: Waiting for something outside (a Secret, the business cluster).
    retry_interval: float = 10.0
    #: Failed steps and unreachable hosts back off from ``min_backoff`` to ``max_backoff``.
    min_backoff: float = 2.0
    max_backoff: float = 300.0
    drain_poll_interval: float = 2.0
    field_manager: str = "kokpit-machine-operator"
    #: The field manager of the node conditions published from the Condition ConfigMaps.
    gates_field_manager: str = "kokpit-readiness-gates"
    max_concurrent_reconciles: int = 16
    #: Rate limit of the clients of business clusters.
    cluster_qps: float = 50.0
    cluster_burst: int = 100
    #: How often each connected business cluster's API server is health-checked.
    cluster_health_interval: float = 10.0
