"""Rate limiters: a token bucket for overall request rates, exponential backoff per key.

Both take the current time as an argument or from an injectable clock, so their arithmetic is
tested without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable


class TokenBucket:
    """``qps`` tokens a second, at most ``burst`` saved up (golang.org/x/time/rate semantics).

    :meth:`reserve` takes a token now and says how long to wait before using it; tokens may go
    negative, which queues callers fairly in arrival order without a lock.
    """

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if qps <= 0 or burst < 1:
            raise ValueError("qps must be > 0 and burst >= 1")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def reserve(self) -> float:
        """Take one token; returns the seconds to wait before it may be used (0 if now)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    async def wait(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


class ExponentialBackoff:
    """Per-key delay ``base * 2**failures``, capped at ``cap`` (client-go's item limiter)."""

    def __init__(self, base: float = 0.005, cap: float = 1000.0) -> None:
        self.base = base
        self.cap = cap
        self._failures: dict[Hashable, int] = {}

    def when(self, key: Hashable) -> float:
        """Count one more failure of ``key``; returns how long to wait before retrying it."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return min(self.cap, self.base * 2.0**n)

    def failures(self, key: Hashable) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)
