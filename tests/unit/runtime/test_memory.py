"""What an operator remembers: expiry by a fake clock, never by sleeping."""

from __future__ import annotations

from kokpit.runtime import Backoff, Recently


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_value_is_remembered_for_its_ttl_and_only_that_value() -> None:
    clock = Clock()
    seen: Recently[str] = Recently(10, clock)
    seen.remember("a", "v1")
    assert seen.holds("a", "v1")
    assert not seen.holds("a", "v2")
    assert not seen.holds("b", "v1")
    clock.now = 9.9
    assert seen.holds("a", "v1")
    clock.now = 10.0
    assert not seen.holds("a", "v1")


def test_a_ttl_given_with_the_value_wins_and_says_how_long_is_left() -> None:
    clock = Clock()
    seen: Recently[str] = Recently(0, clock)
    seen.remember("a", "v", ttl=60)
    clock.now = 45
    assert seen.holds("a", "v")
    assert seen.left("a") == 15
    assert seen.left("nothing") == 0
    seen.forget("a")
    assert not seen.holds("a", "v")
    assert seen.left("a") == 0


def test_backoff_doubles_to_its_maximum_and_resets() -> None:
    backoff = Backoff(2, 10)
    assert [backoff.next("k") for _ in range(5)] == [2, 4, 8, 10, 10]
    assert backoff.next("other") == 2
    backoff.reset("k")
    assert backoff.next("k") == 2
