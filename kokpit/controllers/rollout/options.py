"""The Rollout-Operator's settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RolloutOptions:
    #: Rollouts reconciled at once. Each waits mostly on the objects it moves, so a few do.
    max_concurrent_reconciles: int = 4
    #: Objects one rollout changes at once (concurrent patches) while applying a batch: a
    #: batch of thousands takes seconds, not minutes, without flooding the API server.
    max_concurrent_changes: int = 16
    #: How often a waiting rollout looks again when nothing it watches wakes it (the watches
    #: on Machines and Clusters usually do first).
    poll_interval: float = 5.0
