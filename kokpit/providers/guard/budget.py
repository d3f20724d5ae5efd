"""One policy's budget in one scope: the decisions, as pure functions on a ledger's entry.

Each function takes the policy's spec and the scope's entry of its RiskLedger (camelCase, as
stored) and changes the entry in place; the caller writes the ledger back with the
resourceVersion it read. Times are RFC 3339 strings in the ledger and datetimes here.

The order of the checks is the order a person would ask in: was this very action granted
already (a restarted caller asks again), is the breaker open, is the rate spent, are too many
in flight, would too much of the scope be down.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Object = dict[str, Any]
Outcome = Literal["Succeeded", "Failed", "Cancelled"]


@dataclass(frozen=True)
class Ask:
    """What the budget needs to know of a request."""

    id: str
    action: str
    target: str
    requester: str
    #: The scope's nodes and how many of them are unavailable now, when the policy has a
    #: maxUnavailablePercent (None: unknown, and then the policy denies).
    total: int | None = None
    unavailable: int | None = None


@dataclass(frozen=True)
class Answer:
    allowed: bool
    reason: str
    #: When asking again could be allowed (None: not before something changes).
    retry_after: float | None = None
    #: Whether this answer spent anything (a grant asked for again spends nothing).
    spent: bool = True


def stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def prune(spec: Object, entry: Object, now: datetime) -> None:
    """Forget what no longer counts: grants out of the rate window, failures out of the
    breaker's window; holds past holdSeconds become failures; healthy successes grow the
    adaptive limit; an open breaker past its cooldown half-opens."""
    rate = spec.get("rateLimit")
    if rate:
        start = now - timedelta(seconds=rate["windowSeconds"])
        entry["grants"] = [g for g in entry.get("grants") or [] if parse(g) > start]
    else:
        entry["grants"] = []
    expiry = now - timedelta(seconds=spec.get("holdSeconds", 3600))
    holds = entry.get("inFlight") or []
    expired = [h for h in holds if parse(h["since"]) <= expiry]
    entry["inFlight"] = [h for h in holds if h not in expired]
    for _ in expired:
        _failed(spec, entry, now, "a grant was never reported done within holdSeconds")
    breaker = spec.get("breaker")
    if breaker:
        start = now - timedelta(seconds=breaker["windowSeconds"])
        entry["failures"] = [f for f in entry.get("failures") or [] if parse(f) > start]
        state = entry.get("breaker") or {}
        cooldown = breaker.get("cooldownSeconds")
        if (
            state.get("state") == "Open"
            and cooldown is not None
            and now >= parse(state["since"]) + timedelta(seconds=cooldown)
        ):
            entry["breaker"] = {"state": "HalfOpen", "since": stamp(now), "reason": None}
    else:
        entry["failures"] = []
        entry["breaker"] = None
    adaptive = spec.get("adaptive")
    if adaptive:
        healthy_by = now - timedelta(seconds=adaptive["healthySeconds"])
        successes = entry.get("successes") or []
        matured = [s for s in successes if parse(s) <= healthy_by]
        limit = entry.get("limit") or 1
        for _ in matured:
            limit = min(limit * 2, spec["maxInFlight"])
        entry["limit"] = limit
        entry["successes"] = [s for s in successes if s not in matured]


def decide(spec: Object, entry: Object, ask: Ask, now: datetime) -> Answer:
    """Grant ``ask`` (recording the grant and the hold) or say why not. Call :func:`prune`
    first."""
    holds: list[Object] = entry.setdefault("inFlight", [])
    for hold in holds:
        if hold["id"] == ask.id:
            return Answer(True, f"granted already at {hold['since']}", spent=False)
    denied = _why_not(spec, entry, ask, now)
    if denied is not None and not spec.get("dryRun"):
        return denied
    entry.setdefault("grants", []).append(stamp(now))
    holds.append(
        {
            "id": ask.id,
            "action": ask.action,
            "target": ask.target,
            "requester": ask.requester,
            "since": stamp(now),
        }
    )
    if denied is not None:
        return Answer(True, f"dry run, would deny: {denied.reason}")
    return Answer(True, "within budget")


def release(spec: Object, entry: Object, id_: str, outcome: Outcome, now: datetime) -> bool:
    """The action ``id_`` is done: drop its hold and count its outcome (a Cancelled action
    never ran: it counts for nothing, though its grant stays in the rate window). Returns
    whether there was such a hold."""
    holds = entry.get("inFlight") or []
    if not any(h["id"] == id_ for h in holds):
        return False
    entry["inFlight"] = [h for h in holds if h["id"] != id_]
    if outcome == "Succeeded":
        if spec.get("adaptive"):
            entry.setdefault("successes", []).append(stamp(now))
        if (entry.get("breaker") or {}).get("state") == "HalfOpen":
            entry["breaker"] = {"state": "Closed", "since": stamp(now), "reason": None}
    elif outcome == "Failed":
        _failed(spec, entry, now, "the action failed")
    return True


def reset(entry: Object, now: datetime) -> None:
    """A person's reset: the breaker closes, failures are forgotten, the adaptive limit starts
    again from one. Grants and holds stay: they happened."""
    entry["failures"] = []
    entry["successes"] = []
    if entry.get("limit") is not None:
        entry["limit"] = 1
    if entry.get("breaker"):
        entry["breaker"] = {"state": "Closed", "since": stamp(now), "reason": None}


def _why_not(spec: Object, entry: Object, ask: Ask, now: datetime) -> Answer | None:
    holds = entry.get("inFlight") or []
    breaker = entry.get("breaker") or {}
    if breaker.get("state") == "Open":
        cooldown = (spec.get("breaker") or {}).get("cooldownSeconds")
        how = (
            f"it half-opens {cooldown}s after opening"
            if cooldown is not None
            else "until a person resets it (kokpit risk reset)"
        )
        retry = (
            _until(parse(breaker["since"]) + timedelta(seconds=cooldown), now) if cooldown else None
        )
        return Answer(
            False,
            f"the breaker is open since {breaker.get('since')} ({breaker.get('reason')}); {how}",
            retry,
        )
    if breaker.get("state") == "HalfOpen" and holds:
        return Answer(False, "the breaker is half-open and its one trial is in flight", None)
    rate = spec.get("rateLimit")
    grants = entry.get("grants") or []
    if rate and len(grants) >= rate["count"]:
        free_at = min(parse(g) for g in grants) + timedelta(seconds=rate["windowSeconds"])
        return Answer(
            False,
            f"rate limit: {len(grants)} of {rate['count']} grants in the last "
            f"{rate['windowSeconds']}s",
            _until(free_at, now),
        )
    limit = spec.get("maxInFlight")
    if limit is not None:
        if spec.get("adaptive"):
            limit = min(limit, entry.get("limit") or 1)
        if len(holds) >= limit:
            return Answer(False, f"{len(holds)} of {limit} allowed in flight", None)
    percent = spec.get("maxUnavailablePercent")
    if percent is not None:
        if ask.total is None or ask.unavailable is None:
            return Answer(False, "the scope's health is unknown (maxUnavailablePercent)", None)
        down = ask.unavailable + len(holds) + 1
        if ask.total == 0 or down * 100 > percent * ask.total:
            return Answer(
                False,
                f"{down} of {ask.total} nodes would be unavailable, more than {percent}%",
                None,
            )
    return None


def _failed(spec: Object, entry: Object, now: datetime, why: str) -> None:
    if spec.get("adaptive"):
        entry["limit"] = 1
        entry["successes"] = []
    breaker = spec.get("breaker")
    if not breaker:
        return
    failures: list[str] = entry.setdefault("failures", [])
    failures.append(stamp(now))
    state = (entry.get("breaker") or {}).get("state", "Closed")
    if state == "HalfOpen":
        entry["breaker"] = {
            "state": "Open",
            "since": stamp(now),
            "reason": f"the trial failed: {why}",
        }
    elif state == "Closed" and len(failures) >= breaker["maxFailures"]:
        reason = f"{len(failures)} failures within {breaker['windowSeconds']}s; last: {why}"
        entry["breaker"] = {"state": "Open", "since": stamp(now), "reason": reason}


def _until(at: datetime, now: datetime) -> float:
    return max((at - now).total_seconds(), 0.0)
