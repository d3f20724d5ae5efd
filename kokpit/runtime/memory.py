"""What an operator process remembers between reconciles, and why that is allowed.

The API server holds all state that matters. A process may still remember a few things to
save work — that it checked a host a minute ago, how often a step failed in a row — as long as
forgetting them (a restart, another replica taking over) only costs work done again, never a
wrong decision. Both classes here are such savers, keyed by object uid, and forget on request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class Recently(Generic[T]):
    """Remembers a value per key for ``ttl`` seconds (or the ttl given with it): "this process
    already did *value* for *key* lately", so the work can be skipped until the value changes
    or the time is up."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._seen: dict[str, tuple[T, float]] = {}  # value, when it expires

    def remember(self, key: str, value: T, ttl: float | None = None) -> None:
        self._seen[key] = (value, self._clock() + (self._ttl if ttl is None else ttl))

    def holds(self, key: str, value: T) -> bool:
        seen = self._seen.get(key)
        return seen is not None and seen[0] == value and self._clock() < seen[1]

    def left(self, key: str) -> float:
        """Seconds until what is remembered for ``key`` expires (0 if nothing is)."""
        seen = self._seen.get(key)
        return max(0.0, seen[1] - self._clock()) if seen is not None else 0.0

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)


class Backoff:
    """Per-key retry delays for failures the operator handles itself (a step that failed on
    a host): ``minimum`` doubling up to ``maximum``, back to ``minimum`` after a success."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self._minimum = minimum
        self._maximum = maximum
        self._failures: dict[str, int] = {}

    def next(self, key: str) -> float:
        """The delay after one more failure of ``key``."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return float(min(self._maximum, self._minimum * 2**failures))

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)
