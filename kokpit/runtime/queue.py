"""A rate-limited work queue with client-go's semantics, for one event loop.

Invariants (as in ``k8s.io/client-go/util/workqueue``):

- a key is queued at most once: adding it again while it waits is a no-op (deduplication);
- a key is handed to at most one worker at a time: added while being processed, it is marked
  dirty and queued again when the worker calls :meth:`done`;
- keys come out by priority, then in the order they were added at that priority (FIFO within
  a priority): a key queued at a lower priority that is added at a higher one moves to the end
  of the higher priority's keys (controller-runtime's priority queue does the same);
- delayed adds wait in one heap served by one task, never one timer or task per key; a key
  added with several delays becomes ready at the earliest;
- :meth:`add_rate_limited` delays by the larger of the key's exponential backoff and the
  overall token bucket, so one failing key backs off while a storm of failures is capped too.

Why priorities: with one FIFO, a change someone makes (a readiness gate reported, a taint
removed by hand) waited behind every key already queued; while a thousand Machines joined, that
was tens of seconds. The controller says how urgent each add is (:class:`Priority`): changes
others made come first, new objects next, and routine work (requeues, retries' delays, the
initial list, the echoes of the controller's own writes) last.
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
from enum import IntEnum
from typing import Generic, TypeVar

from kokpit.runtime import metrics
from kokpit.runtime.ratelimit import ExponentialBackoff, TokenBucket

K = TypeVar("K", bound=Hashable)


class Priority(IntEnum):
    """How soon a queued key comes out: higher first; FIFO among keys of one priority."""

    #: Nothing new to act on: a requeue (RequeueAfter, a delayed retry), the initial list,
    #: or the echo of the controller's own write. Work that can wait behind the rest.
    ROUTINE = 0
    #: An object that did not exist before: its first reconcile starts long work (a join).
    NEW = 1
    #: An existing object changed or deleted by someone else: a person or another operator
    #: is waiting for it to be acted on. The default of :meth:`WorkQueue.add`.
    CHANGE = 2


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
    """Keys waiting until a time, each with the priority it is queued at then; pure
    bookkeeping, the queue's waiting task drives it."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._ready_at: dict[K, float] = {}
        self._priority: dict[K, Priority] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._ready_at)

    def push(self, key: K, ready_at: float, priority: Priority = Priority.ROUTINE) -> bool:
        """Schedule ``key``; keeps the earlier time and the higher priority if already
        waiting. True if its time changed."""
        self._priority[key] = max(priority, self._priority.get(key, priority))
        current = self._ready_at.get(key)
        if current is not None and current <= ready_at:
            return False
        self._ready_at[key] = ready_at
        heapq.heappush(self._heap, (ready_at, next(self._seq), key))
        return True

    def pop_ready(self, now: float) -> list[tuple[K, Priority]]:
        ready = []
        while self._heap and self._heap[0][0] <= now:
            at, _, key = heapq.heappop(self._heap)
            if self._ready_at.get(key) == at:  # else a stale entry superseded by an earlier one
                del self._ready_at[key]
                ready.append((key, self._priority.pop(key)))
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
        #: One FIFO per priority, of (sequence, key). An entry whose sequence is not the key's
        #: in ``_queued`` is stale (the key moved to a higher priority) and is skipped.
        self._lanes: list[deque[tuple[int, K]]] = [deque() for _ in Priority]
        self._queued: dict[K, int] = {}  # key -> the sequence of its live entry
        self._seq = itertools.count()
        #: Keys added and not yet handed out (queued, or to be queued again at their worker's
        #: done()), with the highest priority they were added at.
        self._dirty: dict[K, Priority] = {}
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
        return len(self._queued)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, key: K, priority: Priority = Priority.CHANGE) -> None:
        """Queue ``key`` now at ``priority``. Already queued, it stays queued once, at the
        higher of the two priorities (raised, it goes to the end of the higher one's keys)."""
        if self._shutting_down:
            return
        current = self._dirty.get(key)
        if current is not None:
            if priority > current:
                self._dirty[key] = priority
                if key in self._queued:  # else being processed: done() queues it at priority
                    self._enqueue(key, priority)
            return
        self._adds.inc()
        self._dirty[key] = priority
        self._added_at.setdefault(key, self._clock())
        if key in self._processing:
            return  # done() queues it again
        self._enqueue(key, priority)

    def add_after(self, key: K, delay: float, priority: Priority = Priority.ROUTINE) -> None:
        """Queue ``key`` at ``priority`` after ``delay`` seconds (at once if ``delay`` <= 0).
        The default priority is :attr:`Priority.ROUTINE`: a requeue is nothing anyone waits on
        now, so it comes after every change."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key, priority)
            return
        if self._waiting.push(key, self._clock() + delay, priority):
            self._ensure_waiter()
            self._waiting_changed.set()

    def add_rate_limited(self, key: K, priority: Priority = Priority.ROUTINE) -> None:
        """Queue ``key`` again after its backoff: a retry after a failure. The controller
        passes the priority the key came out with: a change whose reconcile failed has still
        not been acted on, and the backoff already keeps it from crowding out the rest."""
        self._retries.inc()
        self.add_after(key, max(self._backoff.when(key), self._bucket.reserve()), priority)

    def forget(self, key: K) -> None:
        """The key succeeded: reset its backoff."""
        self._backoff.forget(key)

    def failures(self, key: K) -> int:
        return self._backoff.failures(key)

    async def get(self) -> K:
        """The next key, waiting for one; raises :class:`ShutDown` once shutting down."""
        key, _ = await self.get_with_priority()
        return key

    async def get_with_priority(self) -> tuple[K, Priority]:
        """The next key and the priority it was queued at: the highest priority's first."""
        while not self._queued and not self._shutting_down:
            self._ready.clear()
            await self._ready.wait()
        if self._shutting_down:
            raise ShutDown()
        key, priority = self._pop()
        self._depth.set(len(self._queued))
        now = self._clock()
        self._latency.observe(now - self._added_at.pop(key, now))
        self._processing[key] = now
        self._idle.clear()
        del self._dirty[key]
        return key, priority

    def done(self, key: K) -> None:
        """The worker finished ``key``; if it was added meanwhile, queue it again (at the
        priority it was added at)."""
        started = self._processing.pop(key, None)
        if started is not None:
            self._work.observe(self._clock() - started)
        if not self._processing:
            self._idle.set()
        priority = self._dirty.get(key)
        if priority is not None and not self._shutting_down:
            self._enqueue(key, priority)

    async def shutdown(self, *, drain_timeout: float = 30.0) -> None:
        """Stop handing out keys; wait (up to ``drain_timeout``) for in-flight work to finish."""
        self._shutting_down = True
        self._ready.set()
        if self._waiter is not None:
            self._waiter.cancel()
        if self._processing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), drain_timeout)

    def _enqueue(self, key: K, priority: Priority) -> None:
        """Append ``key`` to ``priority``'s FIFO (an entry it had in a lower one goes stale)."""
        seq = next(self._seq)
        self._queued[key] = seq
        self._lanes[priority].append((seq, key))
        self._depth.set(len(self._queued))
        self._ready.set()

    def _pop(self) -> tuple[K, Priority]:
        """Take the first live entry of the highest non-empty priority (there is one: a key is
        in ``_queued`` only while its live entry is in a lane)."""
        for priority in reversed(Priority):
            lane = self._lanes[priority]
            while lane:
                seq, key = lane.popleft()
                if self._queued.get(key) == seq:
                    del self._queued[key]
                    return key, priority
        raise RuntimeError("work queue: a queued key without an entry")  # a bug, not input

    def _ensure_waiter(self) -> None:
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.get_running_loop().create_task(
                self._wait_loop(), name=f"workqueue-{self.name}-delayed"
            )

    async def _wait_loop(self) -> None:
        """Move keys whose delay has passed into the queue; sleeps until the next one is due."""
        while not self._shutting_down:
            for key, priority in self._waiting.pop_ready(self._clock()):
                self.add(key, priority)
            due = self._waiting.next_time()
            self._waiting_changed.clear()
            timeout = None if due is None else max(0.0, due - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._waiting_changed.wait(), timeout)
