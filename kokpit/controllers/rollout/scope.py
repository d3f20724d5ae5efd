"""What one reconcile of a Rollout works on: the Rollout (a private copy, written at the end
and before each batch is applied), the objects of its namespace as the cache holds them, and
the facts the phases record for its conditions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kokpit.controllers.rollout.plan import Change
from kokpit.controllers.rollout.targets import TARGETS, Target
from kokpit.runtime import ObjectScope

Object = dict[str, Any]

#: Phases the rollout never leaves by itself.
FINISHED = ("Succeeded", "Aborted")


@dataclass
class RolloutScope(ObjectScope):
    #: The selected objects (matching the selector now).
    selected: list[Object] = field(default_factory=list)
    #: Objects this run of the rollout changed, with its mark on each (selected or not).
    changed: list[tuple[Object, Change]] = field(default_factory=list)
    #: Selected objects another unfinished rollout has changed: object uid → that rollout's.
    contested: dict[str, str] = field(default_factory=dict)
    #: (reason, message) of what holds the scope's health check, for ScopeHealthy.
    unhealthy: tuple[str, str] | None = None
    #: After a rollback: "" when every object is back and Ready, else which are not (None: not
    #: judged in this reconcile).
    behind: str | None = None

    @property
    def target(self) -> Target:
        return TARGETS[self.spec["target"]["kind"]]

    @property
    def version(self) -> str:
        return str(self.spec["target"]["packageVersion"])

    @property
    def attempt(self) -> int:
        return int(self.status.get("attempt") or 0)

    @property
    def index(self) -> int:
        return int(self.status.get("currentBatch") or 0)

    @property
    def batch(self) -> Object:
        """The current batch's status entry (made Pending when missing)."""
        batches: list[Object] = self.status.setdefault("batches", [])
        while len(batches) <= self.index:
            batches.append({"index": len(batches), "state": "Pending", "size": 0})
        return batches[self.index]

    def members(self, index: int) -> list[Object]:
        """The objects batch ``index`` of this run changed."""
        return [obj for obj, change in self.changed if change.batch == index]


def seconds_since(stamp: str | None) -> float:
    """Seconds since an RFC 3339 timestamp written by :func:`kokpit.api.conditions.now`."""
    if not stamp:
        return 0.0
    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - then).total_seconds()
