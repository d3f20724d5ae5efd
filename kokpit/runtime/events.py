"""Kubernetes Events (``events.k8s.io/v1``) from controllers, written in the background and
deduplicated, so that a reconcile never waits for its Events and a failure repeating in a hot
loop costs the API server one write per interval, not one per attempt.

:meth:`EventRecorder.event` returns at once; two sender tasks make the writes (client-go's
broadcaster writes in the background too, one at a time). Waiting for each Event kept a worker
for a whole request per Event, about eight per remediation, on the path from a fault to its
cordon. Beyond ``backlog`` waiting writes, new Events are dropped and counted
(``kokpit_events_dropped_total``): Events are informative, never the state a controller resumes
from. :meth:`EventRecorder.close` writes what is waiting before a process stops.

The first occurrence of (object, type, reason, note) creates an Event; repeats within
``series_window`` update its ``series`` (count and last time), at most once per
``min_update_interval`` — occurrences in between are counted and written with the next update.
A failure to record an event is logged and never fails the reconcile that reported it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from kokpit.runtime.client import Client, Object
from kokpit.runtime.log import get_logger
from kokpit.runtime.metrics import EVENTS_DROPPED
from kokpit.runtime.resources import EVENTS

EventType = Literal["Normal", "Warning"]
#: Distinct recent events remembered for deduplication before old ones are forgotten.
MAX_TRACKED = 10_000


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int
    first: float
    last_write: float
    #: Its create succeeded: until then a repeat is only counted (a series update sent
    #: beside its create, by another sender, could reach the API server first).
    created: bool = False


Write = Callable[[], Awaitable[None]]


@dataclass
class EventRecorder:
    client: Client
    #: ``reportingController``, e.g. ``kokpit.io/cluster-operator``.
    controller: str
    #: ``reportingInstance``: this replica (pod name).
    instance: str
    series_window: float = 600.0
    min_update_interval: float = 30.0
    clock: Callable[[], float] = time.monotonic
    #: Writes waiting beyond this many: new Events are dropped.
    backlog: int = 4096
    #: Writes in flight at once. Few: an Event must not take the API server's time from the
    #: changes it reports (client-go writes them one at a time). At ten thousand nodes, one
    #: sender and eight made no difference to detection → cordon that we could measure above
    #: the noise (bench/results/healing-events-senders1.json); two keep up with a rollout's
    #: Events where one would drop some.
    senders: int = 2
    _seen: dict[tuple[str, ...], _Seen] = field(default_factory=dict)
    _queue: asyncio.Queue[Write] | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _dropping: bool = False

    def __post_init__(self) -> None:
        self._log = get_logger("kokpit.events", controller=self.controller)

    def event(
        self, regarding: Object, type_: EventType, reason: str, note: str, *, action: str = ""
    ) -> None:
        """Record that ``reason`` happened to ``regarding`` (an object as read from the API).
        Returns at once; the write follows."""
        meta = regarding["metadata"]
        key = (meta.get("uid", ""), type_, reason, note)
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None or now - seen.first > self.series_window:
            body = self._body(regarding, type_, reason, note, action)
            if len(self._seen) >= MAX_TRACKED:
                self._forget(now)
            seen = _Seen(body["metadata"]["name"], body["metadata"]["namespace"], 1, now, now)
            self._seen[key] = seen
            if not self._send(lambda: self._create(body, key, seen), reason):
                del self._seen[key]
        else:
            seen.count += 1
            if seen.created and now - seen.last_write >= self.min_update_interval:
                seen.last_write = now
                count = seen.count
                self._send(lambda: self._update_series(seen, count), reason)

    def _forget(self, now: float) -> None:
        """Forget the series older than the window; if as many remain (more distinct Events
        than that within the window: their notes may carry what nodes report), the tenth
        recorded first too. A repeat of a forgotten Event creates a new one: memory stays
        bounded, and the work of forgetting is paid once per tenth, not per Event."""
        self._seen = {k: v for k, v in self._seen.items() if now - v.first <= self.series_window}
        if len(self._seen) >= MAX_TRACKED:
            oldest = list(itertools.islice(self._seen, MAX_TRACKED // 10))
            for key in oldest:
                del self._seen[key]

    async def flush(self) -> None:
        """Wait until every Event recorded so far is written (or has failed)."""
        if self._queue is not None and self._running():
            await self._queue.join()

    async def close(self, grace: float = 5.0) -> None:
        """Write what is waiting (for at most ``grace`` seconds; what is left then is dropped
        and counted), then stop the senders."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), grace)
        left = self._queue.qsize() if self._queue is not None else 0
        if left:
            EVENTS_DROPPED.labels(self.controller).inc(left)
            self._log.warning("events dropped: not written within the grace", extra={"left": left})
        await self._stop_senders()

    def _send(self, write: Write, reason: str) -> bool:
        """Queue ``write`` for the senders; False when the backlog is full (dropped)."""
        if self._queue is None or not self._running():
            self._start()
        if self._queue is None or self._queue.qsize() >= self.backlog:
            EVENTS_DROPPED.labels(self.controller).inc()
            if not self._dropping:  # once per overflow, not once per Event
                self._log.warning("events dropped: the backlog is full", extra={"reason": reason})
            self._dropping = True
            return False
        self._dropping = False
        self._queue.put_nowait(write)
        return True

    def _running(self) -> bool:
        """The senders run, on this event loop (a recorder may outlive a loop in tests)."""
        loop = asyncio.get_running_loop()
        return bool(self._tasks) and all(not t.done() and t.get_loop() is loop for t in self._tasks)

    async def _stop_senders(self) -> None:
        """Cancel the senders and wait for those of this loop. Senders of an event loop that
        has ended are only forgotten: that loop cancelled them, or can no longer run them."""
        loop = asyncio.get_running_loop()
        ours = [t for t in self._tasks if t.get_loop() is loop]
        for task in ours:
            task.cancel()
        await asyncio.gather(*ours, return_exceptions=True)
        self._tasks.clear()
        self._queue = None

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        for task in self._tasks:
            if task.get_loop() is loop:
                task.cancel()
        self._queue = asyncio.Queue()
        self._tasks = [
            asyncio.get_running_loop().create_task(self._sender(self._queue), name="events")
            for _ in range(self.senders)
        ]

    async def _sender(self, queue: asyncio.Queue[Write]) -> None:
        while True:
            write = await queue.get()
            try:
                await write()
            except Exception as e:  # an Event is never worth a stopped sender
                self._log.warning("could not record event", extra={"error": repr(e)})
            finally:
                queue.task_done()

    def _body(
        self, regarding: Object, type_: EventType, reason: str, note: str, action: str
    ) -> Object:
        meta = regarding["metadata"]
        namespace = meta.get("namespace") or "default"
        return {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": namespace},
            "eventTime": _micro_time(),
            "reportingController": self.controller,
            "reportingInstance": self.instance,
            "action": action or reason,
            "reason": reason,
            "type": type_,
            "note": note[:1024],
            "regarding": {
                "apiVersion": regarding.get("apiVersion", ""),
                "kind": regarding.get("kind", ""),
                "name": meta["name"],
                "namespace": meta.get("namespace", ""),
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
        }

    async def _create(self, body: Object, key: tuple[str, ...], seen: _Seen) -> None:
        try:
            await self.client.create(EVENTS, body)
        except Exception:
            if self._seen.get(key) is seen:  # not written: the next occurrence creates it
                del self._seen[key]
            raise
        seen.created = True

    async def _update_series(self, seen: _Seen, count: int) -> None:
        series = {"series": {"count": count, "lastObservedTime": _micro_time()}}
        await self.client.patch(EVENTS, seen.name, series, namespace=seen.namespace)
