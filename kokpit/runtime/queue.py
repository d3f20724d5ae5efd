"""A rate-limited work queue with client-go's semantics, for one event loop.

Invariants (as in ``k8s.io/client-go/util/workqueue``):

- a key is queued at most once: adding it again while it waits is a no-op (deduplication);
- a key is handed to at most one worker at a time: added while being processed, it is marked
  dirty and queued again when the worker calls :meth:`done`;
- keys come out in the order they were first added (FIFO);
- delayed adds wait in one heap served by one task, never one timer or task per key; a key
  added with several delays becomes ready at the earliest;
- :meth:`add_rate_limited` delays by the larger of the key's exponential backoff and the
  overall token bucket, so one failing key backs off while a storm of failures is capped too.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from kokpit.runtime import metrics
from kokpit.runtime.ratelimit import ExponentialBackoff, TokenBucket

K = TypeVar("K", bound=Hashable)


class ShutDown(Exception):
    """The queue is shutting down: no more keys will come out."""


@dataclass(frozen=True)
class RateLimit:
    """Defaults are controller-runtime's: 5 ms doubling to 1000 s per key; 10 qps, burst 100."""

    base_delay: float = 0.005
    max_delay: float = 1000.0
    qps: float = 10.0
    burst: int = 100


class DelayHeap(Generic[K]):
    """Keys waiting until a time; pure bookkeeping, the queue's waiting task drives it."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._ready_at: dict[K, float] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._ready_at)

    def push(self, key: K, ready_at: float) -> bool:
        """Schedule ``key``; keeps the earlier time if already waiting. True if it changed."""
        current = self._ready_at.get(key)
        if current is not None and current <= ready_at:
            return False
        self._ready_at[key] = ready_at
        heapq.heappush(self._heap, (ready_at, next(self._seq), key))
        return True

    def pop_ready(self, now: float) -> list[K]:
        ready = []
        while self._heap and self._heap[0][0] <= now:
            at, _, key = heapq.heappop(self._heap)
            if self._ready_at.get(key) == at:  # else a stale entry superseded by an earlier one
                del self._ready_at[key]
                ready.append(key)
        return ready

    def next_time(self) -> float | None:
        while self._heap and self._ready_at.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None


class WorkQueue(Generic[K]):
    """See the module docstring. Create and use it inside one running event loop."""

    def __init__(
        self,
        name: str,
        *,
        rate_limit: RateLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        rl = rate_limit or RateLimit()
        self.name = name
        self._clock = clock
        self._backoff = ExponentialBackoff(rl.base_delay, rl.max_delay)
        self._bucket = TokenBucket(rl.qps, rl.burst, clock)
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: dict[K, float] = {}  # key -> when processing started
        self._added_at: dict[K, float] = {}
        self._waiting: DelayHeap[K] = DelayHeap()
        self._ready = asyncio.Event()  # set while keys are queued (or shutting down)
        self._idle = asyncio.Event()  # set while no key is being processed
        self._idle.set()
        self._waiting_changed = asyncio.Event()
        self._shutting_down = False
        self._waiter: asyncio.Task[None] | None = None
        labels = {"name": name, "controller": name}
        self._depth = metrics.WORKQUEUE_DEPTH.labels(**labels)
        self._adds = metrics.WORKQUEUE_ADDS.labels(**labels)
        self._latency = metrics.WORKQUEUE_QUEUE_DURATION.labels(**labels)
        self._work = metrics.WORKQUEUE_WORK_DURATION.labels(**labels)
        self._retries = metrics.WORKQUEUE_RETRIES.labels(**labels)

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, key: K) -> None:
        """Queue ``key`` now, unless it is queued already."""
        if self._shutting_down or key in self._dirty:
            return
        self._adds.inc()
        self._dirty.add(key)
        self._added_at.setdefault(key, self._clock())
        if key in self._processing:
            return  # done() queues it again
        self._queue.append(key)
        self._depth.set(len(self._queue))
        self._notify()

    def add_after(self, key: K, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds (at once if ``delay`` <= 0)."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        if self._waiting.push(key, self._clock() + delay):
            self._ensure_waiter()
            self._waiting_changed.set()

    def add_rate_limited(self, key: K) -> None:
        """Queue ``key`` again after its backoff: a retry after a failure."""
        self._retries.inc()
        self.add_after(key, max(self._backoff.when(key), self._bucket.reserve()))

    def forget(self, key: K) -> None:
        """The key succeeded: reset its backoff."""
        self._backoff.forget(key)

    def failures(self, key: K) -> int:
        return self._backoff.failures(key)

    async def get(self) -> K:
        """The next key, waiting for one; raises :class:`ShutDown` once shutting down."""
        while not self._queue and not self._shutting_down:
            self._ready.clear()
            await self._ready.wait()
        if self._shutting_down:
            raise ShutDown()
        key = self._queue.popleft()
        self._depth.set(len(self._queue))
        now = self._clock()
        self._latency.observe(now - self._added_at.pop(key, now))
        self._processing[key] = now
        self._idle.clear()
        self._dirty.discard(key)
        return key

    def done(self, key: K) -> None:
        """The worker finished ``key``; if it was added meanwhile, queue it again."""
        started = self._processing.pop(key, None)
        if started is not None:
            self._work.observe(self._clock() - started)
        if not self._processing:
            self._idle.set()
        if key in self._dirty and not self._shutting_down:
            self._queue.append(key)
            self._depth.set(len(self._queue))
            self._notify()

    async def shutdown(self, *, drain_timeout: float = 30.0) -> None:
        """Stop handing out keys; wait (up to ``drain_timeout``) for in-flight work to finish."""
        self._shutting_down = True
        self._ready.set()
        if self._waiter is not None:
            self._waiter.cancel()
        if self._processing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), drain_timeout)

    def _notify(self) -> None:
        self._ready.set()

    def _ensure_waiter(self) -> None:
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.get_running_loop().create_task(
                self._wait_loop(), name=f"workqueue-{self.name}-delayed"
            )

    async def _wait_loop(self) -> None:
        """Move keys whose delay has passed into the queue; sleeps until the next one is due."""
        while not self._shutting_down:
            for key in self._waiting.pop_ready(self._clock()):
                self.add(key)
            due = self._waiting.next_time()
            self._waiting_changed.clear()
            timeout = None if due is None else max(0.0, due - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._waiting_changed.wait(), timeout)
