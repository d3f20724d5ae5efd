"""One NodeFault record's life, as pure functions: what a detector's observation changes.

Invariants (the fault hub writes only what these say):

- **Writes follow transitions.** A record is written when its fault turns Active or Cleared,
  and, while it stays Active, at most every ``last_seen_interval`` to refresh ``lastSeen``
  (the message with it). An observation that changes nothing writes nothing.
- **One record per Machine and fault type, for good.** A fault that clears and comes back
  (flaps) turns the same record Active again: ``count`` is how many times it became Active,
  ``firstSeen`` stays the first time, ``history`` keeps the last :data:`HISTORY_MAX`
  transitions, oldest dropped.
- **Unknown is not healthy.** A detector that cannot tell (the business cluster unreachable,
  no probe since the operator started) makes no observation, and the record stays as it is.
- Only the fields the hub owns are touched (``remediation`` and the conditions belong to the
  Remediation workflow).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kokpit.api.v1alpha1.nodefault import HISTORY_MAX, FaultSource

Object = dict[str, Any]

#: The status fields the hub writes; everything else in a NodeFault's status is someone else's.
OWNED = (
    "state",
    "clusterName",
    "nodeName",
    "source",
    "message",
    "firstSeen",
    "lastSeen",
    "count",
    "history",
)
#: A message is cut to this many characters (the API's bound).
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class Observation:
    """What one detector says of one fault type on one Machine now."""

    type: str
    source: FaultSource
    active: bool
    message: str = ""


@dataclass(frozen=True)
class Where:
    """The Machine's cluster and node, recorded with the fault."""

    cluster_name: str
    node_name: str


@dataclass(frozen=True)
class Transition:
    """What an observation does to a record."""

    #: The hub's fields of the new status (only :data:`OWNED`), or None: nothing to write.
    status: Object | None
    #: The fault turned Active (a new record, or a cleared one back): an Event says so.
    activated: bool = False
    cleared: bool = False


def stamp(when: datetime) -> str:
    """A time in the API's format (RFC 3339, seconds, UTC)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    """An API time (seconds or microseconds, ``Z`` or an offset), or None if it is not one:
    a hostile or missing value is no time at all, never an exception."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def observe(
    status: Mapping[str, Any] | None,
    observation: Observation,
    where: Where,
    now: datetime,
    last_seen_interval: float,
) -> Transition:
    """The record's next status after ``observation`` (``status`` None: no record yet)."""
    current = {k: v for k, v in (status or {}).items() if k in OWNED}
    state = current.get("state")
    message = observation.message[:MAX_MESSAGE]
    if observation.active:
        if state == "Active":
            last_seen = parse_time(current.get("lastSeen"))
            moved = (current.get("clusterName"), current.get("nodeName")) != (
                where.cluster_name,
                where.node_name,
            )
            due = last_seen is None or now - last_seen >= timedelta(seconds=last_seen_interval)
            if not (due or moved):
                return Transition(None)
            return Transition(_with(current, observation, message, where, now))
        new = _with(current, observation, message, where, now)
        new["state"] = "Active"
        new["count"] = int(current.get("count") or 0) + 1
        new.setdefault("firstSeen", stamp(now))
        new["history"] = _append(current, "Active", observation, message, now)
        return Transition(new, activated=True)
    if state != "Active":
        return Transition(None)  # no record, or cleared already: nothing to say
    new = _with(current, observation, message, where, now)
    new["state"] = "Cleared"
    new["history"] = _append(current, "Cleared", observation, message, now)
    return Transition(new, cleared=True)


def cleared_at(status: Mapping[str, Any]) -> datetime | None:
    """When a Cleared record cleared (None if it is not Cleared)."""
    if status.get("state") != "Cleared":
        return None
    for entry in reversed(status.get("history") or []):
        if isinstance(entry, Mapping) and entry.get("state") == "Cleared":
            return parse_time(entry.get("time"))
    return parse_time(status.get("lastSeen"))


def expires_in(status: Mapping[str, Any], now: datetime, retention: float) -> float | None:
    """Seconds until a Cleared record is due for deletion (<= 0: due now); None if it is not
    Cleared."""
    at = cleared_at(status)
    if at is None:
        return None if status.get("state") != "Cleared" else 0.0
    return (at + timedelta(seconds=retention) - now).total_seconds()


def refresh_in(status: Mapping[str, Any], now: datetime, last_seen_interval: float) -> float | None:
    """Seconds until an Active record's lastSeen is due for a refresh (None if not Active)."""
    if status.get("state") != "Active":
        return None
    last_seen = parse_time(status.get("lastSeen"))
    if last_seen is None:
        return 0.0
    return (last_seen + timedelta(seconds=last_seen_interval) - now).total_seconds()


def _with(
    current: Object, observation: Observation, message: str, where: Where, now: datetime
) -> Object:
    new = dict(current)
    new.update(
        clusterName=where.cluster_name,
        nodeName=where.node_name,
        source=observation.source,
        message=message,
        lastSeen=stamp(now),
    )
    return new


def _append(
    current: Object, state: str, observation: Observation, message: str, now: datetime
) -> list[Object]:
    history = [h for h in current.get("history") or [] if isinstance(h, Mapping)]
    history.append(
        {"state": state, "source": observation.source, "time": stamp(now), "message": message}
    )
    return [dict(h) for h in history[-HISTORY_MAX:]]
