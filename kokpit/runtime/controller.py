"""Controllers: watches that map events to keys, a work queue, and workers that reconcile.

The reconcile contract (controller-runtime's):

- ``reconcile(request)`` is level-based: ``request`` names an object, never an event. Read the
  current state (from the cache), compare with the desired state, take the next step, write
  status. It runs at most once at a time per key.
- Return ``Result()`` when done; ``Result(requeue_after=s)`` to look again in ``s`` seconds
  (periodic checks, waiting on something outside the cluster).
- Raise any exception to retry with per-key exponential backoff (5 ms doubling to 1000 s).
- Raise :class:`TerminalError` for a failure retrying cannot fix (bad input): it is counted and
  logged, not retried; a later change to the object enqueues it again.

Keys are queued by priority (:class:`~kokpit.runtime.queue.Priority`), so that a change someone
makes is acted on while a backlog drains: updates and deletes someone else made first, new
objects next, and last the routine work — requeues, what the first list found, and the echoes
of the process's own writes (:func:`~kokpit.runtime.informer.event_origin`). A failed
reconcile's retry keeps the priority its key came out with (the change is not yet acted on).

An echo is routine only when it is the controller's own: several controllers of one process
share its client, so the write of one (a fault recorded, a remediation admitted) reaches the
next as an echo too. A watch names such hand-offs (``handoff``): an echo that passes it is
queued as the change or creation it is for this controller, not behind the routine work.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kokpit.runtime import metrics
from kokpit.runtime.client import Object
from kokpit.runtime.errors import ApiError, Conflict
from kokpit.runtime.informer import EventHandler, Origin, event_origin
from kokpit.runtime.log import get_logger
from kokpit.runtime.queue import Priority, RateLimit, ShutDown, WorkQueue


@dataclass(frozen=True, order=True)
class Request:
    """The object to reconcile; ``namespace`` is "" for cluster-scoped objects."""

    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class Result:
    requeue_after: float | None = None


class TerminalError(Exception):
    """A reconcile failure that retrying will not fix."""


class Reconciler(Protocol):
    async def reconcile(self, request: Request) -> Result: ...


Mapper = Callable[[Object], Iterable[Request]]
Predicate = Callable[[Object | None, Object], bool]


class EventSource(Protocol):
    """What a controller watches: an :class:`~kokpit.runtime.informer.Informer`, or a
    :class:`~kokpit.runtime.clustercache.ClusterWatch` over every business cluster."""

    def add_handler(self, handler: EventHandler) -> None: ...

    async def wait_synced(self) -> None:
        """Until the source has delivered what existed when it started."""


def for_object(obj: Object) -> list[Request]:
    """Enqueue the object itself (controller-runtime's EnqueueRequestForObject)."""
    meta = obj["metadata"]
    return [Request(meta.get("namespace") or "", meta["name"])]


def for_owner(kind: str, api_group: str = "") -> Mapper:
    """Enqueue the controlling owner of ``kind`` (EnqueueRequestForOwner, OnlyControllerOwner)."""

    def mapper(obj: Object) -> list[Request]:
        meta = obj["metadata"]
        for ref in meta.get("ownerReferences") or []:
            group = ref["apiVersion"].rpartition("/")[0]
            if ref.get("controller") and ref["kind"] == kind and group == api_group:
                return [Request(meta.get("namespace") or "", ref["name"])]
        return []

    return mapper


def generation_changed(old: Object | None, new: Object) -> bool:
    """A predicate: ignore updates that leave ``metadata.generation`` alone (status writes)."""
    if old is None:
        return True
    return bool(old["metadata"].get("generation") != new["metadata"].get("generation"))


@dataclass(frozen=True)
class ControllerOptions:
    #: Workers; each key is still reconciled by one worker at a time.
    max_concurrent_reconciles: int = 1
    rate_limit: RateLimit = field(default_factory=RateLimit)


class _Enqueue:
    """An informer handler that maps events to requests and queues them: an update or delete
    at :attr:`Priority.CHANGE`, an add at :attr:`Priority.NEW`, and at
    :attr:`Priority.ROUTINE` whatever is no one else's change (the first list, the echo of our
    own write)."""

    def __init__(
        self,
        queue: WorkQueue[Request],
        mapper: Mapper,
        predicate: Predicate | None,
        handoff: Predicate | None = None,
    ):
        self._queue = queue
        self._mapper = mapper
        self._predicate = predicate
        self._handoff = handoff

    def on_add(self, obj: Object) -> None:
        if self._predicate is None or self._predicate(None, obj):
            self._add(obj, Priority.NEW, self._handed_off(None, obj))

    def on_update(self, old: Object, new: Object) -> None:
        if self._predicate is None or self._predicate(old, new):
            handed_off = self._handed_off(old, new)
            self._add(old, Priority.CHANGE, handed_off)
            self._add(new, Priority.CHANGE, handed_off)

    def on_delete(self, obj: Object) -> None:
        self._add(obj, Priority.CHANGE, False)

    def _handed_off(self, old: Object | None, new: Object) -> bool:
        """An echo of this process's write that another of its controllers made for this one
        (never what the first list found: that is no one's change)."""
        return (
            self._handoff is not None
            and event_origin() is Origin.OWN_WRITE
            and self._handoff(old, new)
        )

    def _add(self, obj: Object, priority: Priority, handed_off: bool) -> None:
        if event_origin() is not Origin.CHANGE and not handed_off:
            priority = Priority.ROUTINE
        for request in self._mapper(obj):
            self._queue.add(request, priority)


class Controller:
    """Runs a :class:`Reconciler` for the requests its watches produce."""

    needs_leader = True

    def __init__(self, name: str, reconciler: Reconciler, options: ControllerOptions | None = None):
        self.name = name
        self.reconciler = reconciler
        self.options = options or ControllerOptions()
        self.queue: WorkQueue[Request] = WorkQueue(name, rate_limit=self.options.rate_limit)
        self._watches: list[tuple[EventSource, _Enqueue]] = []
        self._ids = itertools.count(1)
        self._log = get_logger("kokpit.controller", controller=name)
        self._active = metrics.ACTIVE_WORKERS.labels(name)

    def watch(
        self,
        source: EventSource,
        mapper: Mapper = for_object,
        predicate: Predicate | None = None,
        *,
        handoff: Predicate | None = None,
    ) -> Controller:
        """Reconcile what ``mapper`` names for each ``source`` event that passes ``predicate``.
        ``handoff``: the echoes of this process's writes that are another controller handing
        work to this one (see the module docstring), queued as changes, not as routine."""
        self._watches.append((source, _Enqueue(self.queue, mapper, predicate, handoff)))
        return self

    async def start(self) -> None:
        """Wire the watches, wait for their informers to sync, then reconcile until cancelled."""
        for source, handler in self._watches:
            source.add_handler(handler)
        for source, _ in self._watches:
            await source.wait_synced()
        metrics.MAX_CONCURRENT.labels(self.name).set(self.options.max_concurrent_reconciles)
        workers = [
            asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}")
            for i in range(self.options.max_concurrent_reconciles)
        ]
        self._log.info("started", extra={"workers": len(workers)})
        try:
            await asyncio.gather(*workers)
        finally:
            await self.queue.shutdown()
            for w in workers:
                w.cancel()
            for w in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await w

    async def _worker(self) -> None:
        while True:
            try:
                request, priority = await self.queue.get_with_priority()
            except ShutDown:
                return
            try:
                await self._reconcile(request, priority)
            finally:
                self.queue.done(request)

    async def _reconcile(self, request: Request, priority: Priority) -> None:
        log = self._log.with_fields(key=request.key, reconcile_id=next(self._ids))
        self._active.inc()
        started = time.monotonic()
        try:
            result = await self.reconciler.reconcile(request)
        except asyncio.CancelledError:
            raise
        except Conflict:  # optimistic concurrency at work: someone wrote first
            self._count("requeue")
            self.queue.add_rate_limited(request, priority)
            log.info("conflict; reconciling again from fresh state")
        except TerminalError as e:
            self._count("error")
            metrics.RECONCILE_TERMINAL_ERRORS.labels(self.name).inc()
            self.queue.forget(request)
            log.error("reconcile failed; not retrying", extra={"error": str(e)})
        except Exception as e:
            self._count("error")
            self.queue.add_rate_limited(request, priority)
            log.warning(
                "reconcile failed; will retry",
                exc_info=not _expected(e),
                extra={"error": repr(e), "failures": self.queue.failures(request)},
            )
        else:
            self.queue.forget(request)
            if result.requeue_after is not None:
                self._count("requeue_after")
                self.queue.add_after(request, result.requeue_after)
            else:
                self._count("success")
        finally:
            self._active.dec()
            metrics.RECONCILE_TIME.labels(self.name).observe(time.monotonic() - started)

    def _count(self, result: str) -> None:
        metrics.RECONCILE_TOTAL.labels(self.name, result).inc()
        if result == "error":
            metrics.RECONCILE_ERRORS.labels(self.name).inc()


def _expected(error: Any) -> bool:
    """API errors are routine (conflicts, not-found); log them without a traceback."""
    return isinstance(error, ApiError)
