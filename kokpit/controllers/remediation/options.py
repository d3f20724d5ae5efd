"""The Remediation operator's settings, each with its default and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemediationOptions:
    #: Nothing in a scope starts until its unhealthy nodes have stopped growing for this long,
    #: so that faults arriving together (a storm: a partition, a broken switch) are all seen
    #: before anything starts. Short: detection to cordon should stay within seconds.
    admission_delay: float = 2.0
    #: How often a policy with waiting remediations looks again (storm over? a slot free?).
    admission_recheck: float = 2.0
    #: How often a drain or a verification looks at the node again.
    poll_interval: float = 2.0
    #: Waiting for something outside (the business cluster, a Machine, a policy).
    retry_interval: float = 10.0
    #: Remediations worked on at once (each key by one worker at a time).
    max_concurrent_reconciles: int = 16
    field_manager: str = "kokpit-remediation-operator"
