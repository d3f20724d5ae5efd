"""One RiskPolicy's budget in one scope: rate, in flight, breaker, adaptive limit, dry run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kokpit.providers.guard.budget import Ask, decide, prune, release, reset

Object = dict[str, Any]
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def ask(n: int | str, **kw: Any) -> Ask:
    return Ask(str(n), "NodeDelete", f"Machine fleet/m{n}", "test", **kw)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def step(spec: Object, entry: Object, a: Ask, seconds: float = 0) -> bool:
    prune(spec, entry, at(seconds))
    return decide(spec, entry, a, at(seconds)).allowed


def test_five_per_ten_minutes_refuses_the_sixth_until_the_first_leaves_the_window() -> None:
    spec: Object = {"rateLimit": {"count": 5, "windowSeconds": 600}}
    entry: Object = {"key": "*"}
    assert all(step(spec, entry, ask(n), seconds=n) for n in range(5))
    prune(spec, entry, at(10))
    answer = decide(spec, entry, ask(5), at(10))
    assert not answer.allowed
    assert "5 of 5 grants in the last 600s" in answer.reason
    assert answer.retry_after == 590  # the first grant (at 0 s) leaves the window at 600 s
    assert step(spec, entry, ask(5), seconds=600.5)


def test_asking_again_with_the_same_id_is_the_same_grant() -> None:
    spec: Object = {"rateLimit": {"count": 1, "windowSeconds": 600}}
    entry: Object = {"key": "*"}
    assert step(spec, entry, ask("a"))
    prune(spec, entry, at(1))
    again = decide(spec, entry, ask("a"), at(1))
    assert again.allowed
    assert "granted already" in again.reason
    assert not again.spent
    assert len(entry["grants"]) == 1
    assert not step(spec, entry, ask("b"), seconds=2)


def test_in_flight_until_released() -> None:
    spec: Object = {"maxInFlight": 2}
    entry: Object = {"key": "*"}
    assert step(spec, entry, ask(1))
    assert step(spec, entry, ask(2))
    assert not step(spec, entry, ask(3))
    assert release(spec, entry, "1", "Succeeded", at(1))
    assert not release(spec, entry, "1", "Succeeded", at(1)), "released once only"
    assert step(spec, entry, ask(3), seconds=1)


def test_the_breaker_opens_after_three_failures_and_stays_open_until_reset() -> None:
    spec: Object = {"breaker": {"maxFailures": 3, "windowSeconds": 3600}}
    entry: Object = {"key": "*"}
    for n in range(3):
        assert step(spec, entry, ask(n), seconds=n)
        release(spec, entry, str(n), "Failed", at(n))
    assert entry["breaker"]["state"] == "Open"
    prune(spec, entry, at(10))
    answer = decide(spec, entry, ask(9), at(10))
    assert not answer.allowed
    assert "breaker is open" in answer.reason
    assert "until a person resets it" in answer.reason
    assert not step(spec, entry, ask(9), seconds=7200), "no cooldown: open for good"
    reset(entry, at(7201))
    assert step(spec, entry, ask(9), seconds=7201)


def test_a_cooldown_half_opens_for_one_trial_whose_outcome_decides() -> None:
    spec: Object = {"breaker": {"maxFailures": 1, "windowSeconds": 60, "cooldownSeconds": 100}}
    entry: Object = {"key": "*"}
    assert step(spec, entry, ask(1))
    release(spec, entry, "1", "Failed", at(0))
    assert not step(spec, entry, ask(2), seconds=50)
    assert step(spec, entry, ask(2), seconds=100), "the trial"
    assert entry["breaker"]["state"] == "HalfOpen"
    assert not step(spec, entry, ask(3), seconds=101), "one trial at a time"
    release(spec, entry, "2", "Failed", at(102))
    assert entry["breaker"]["state"] == "Open"
    assert step(spec, entry, ask(3), seconds=202)
    release(spec, entry, "3", "Succeeded", at(203))
    assert entry["breaker"]["state"] == "Closed"


def test_a_grant_never_reported_done_counts_as_a_failure_after_hold_seconds() -> None:
    spec: Object = {
        "maxInFlight": 1,
        "holdSeconds": 60,
        "breaker": {"maxFailures": 1, "windowSeconds": 600},
    }
    entry: Object = {"key": "*"}
    assert step(spec, entry, ask(1))
    assert not step(spec, entry, ask(2), seconds=59)
    prune(spec, entry, at(60))
    assert entry["inFlight"] == []
    assert entry["breaker"]["state"] == "Open"
    assert "never reported done" in entry["breaker"]["reason"]


def test_the_adaptive_limit_doubles_after_healthy_actions_and_falls_back_to_one() -> None:
    spec: Object = {"maxInFlight": 8, "adaptive": {"healthySeconds": 30}}
    entry: Object = {"key": "*"}
    assert step(spec, entry, ask(1))
    assert not step(spec, entry, ask(2)), "one at a time at first"
    release(spec, entry, "1", "Succeeded", at(1))
    assert step(spec, entry, ask(2), seconds=2)
    release(spec, entry, "2", "Succeeded", at(3))
    prune(spec, entry, at(33))
    assert entry["limit"] == 4, "two actions healthy for 30 s: 1 → 2 → 4"
    assert all(step(spec, entry, ask(n), seconds=33) for n in (3, 4, 5, 6))
    assert not step(spec, entry, ask(7), seconds=33)
    release(spec, entry, "3", "Failed", at(34))
    assert entry["limit"] == 1


def test_max_unavailable_counts_the_scope_and_what_is_in_flight() -> None:
    spec: Object = {"maxUnavailablePercent": 10}
    entry: Object = {"key": "rack1"}
    assert step(spec, entry, ask(1, total=20, unavailable=1))  # 2 of 20 = 10 %
    answer = decide(spec, entry, ask(2, total=20, unavailable=1), at(0))
    assert not answer.allowed
    assert "3 of 20 nodes would be unavailable" in answer.reason
    unknown = decide(spec, entry, ask(3), at(0))
    assert not unknown.allowed
    assert "health is unknown" in unknown.reason


def test_a_dry_run_allows_and_says_what_it_would_have_denied() -> None:
    spec: Object = {"maxInFlight": 1, "dryRun": True}
    entry: Object = {"key": "*"}
    assert step(spec, entry, ask(1))
    prune(spec, entry, at(0))
    answer = decide(spec, entry, ask(2), at(0))
    assert answer.allowed
    assert answer.reason.startswith("dry run, would deny: 1 of 1 allowed in flight")
