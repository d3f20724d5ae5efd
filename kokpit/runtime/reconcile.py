"""The outline every kokpit reconcile follows, written once.

::

    cache get (gone → done) → private copy + patch snapshot →
      deleting?  delete phases → status → one patch → Events → (all done) finalizer off
      otherwise  finalizer on → paused? → phases → status → one patch → Events

This is Cluster API's ``doReconcile`` with its deferred patch, and controller-runtime's object
reconciler. An operator supplies only what differs (:class:`Outline`): how to build its scope,
its phase lists, and the one function that computes status from what the phases recorded.

Invariants:

- **Status is written once, at the end** (and wherever a phase calls
  :meth:`ObjectScope.persist` to record an intent before a risky step). Even when a phase
  raises, the status of what did happen is written before the error is returned to the queue.
- **Events follow the write** they describe, so an Event never announces a state that was not
  stored.
- **The finalizer is added before any phase runs** (nothing is created that could not be
  cleaned up) and removed only after every delete phase reported done and the final status
  was written.
- **The smallest requeue wins**: each phase may ask to come back; the earliest request is the
  reconcile's result.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from kokpit.runtime.client import Client, Object
from kokpit.runtime.controller import Request, Result
from kokpit.runtime.events import EventType
from kokpit.runtime.patch import PatchHelper
from kokpit.runtime.resources import Resource


@dataclass
class ObjectScope:
    """What one reconcile of one object knows: the object (a private copy), the Events to
    record once its status is written, and when to look again. Operators subclass it with the
    facts their phases record for their status code."""

    obj: Object
    requeue_after: float | None = None
    #: Events to record once the status is written: (type, reason, message).
    events: list[tuple[EventType, str, str]] = field(default_factory=list)
    _persist: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    @property
    def metadata(self) -> Object:
        meta: Object = self.obj["metadata"]
        return meta

    @property
    def spec(self) -> Object:
        spec: Object = self.obj["spec"]
        return spec

    @property
    def status(self) -> Object:
        status: Object = self.obj.setdefault("status", {})
        return status

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "")

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def uid(self) -> str:
        return str(self.metadata["uid"])

    @property
    def phase(self) -> str | None:
        """``status.phase``, the one-word summary ``kubectl get`` shows (None: not set yet)."""
        phase = self.status.get("phase")
        return str(phase) if phase else None

    @phase.setter
    def phase(self, value: str) -> None:
        self.status["phase"] = value

    @property
    def deleting(self) -> bool:
        return bool(self.metadata.get("deletionTimestamp"))

    def seconds_deleted(self) -> float:
        """How long the object has been deleted, at least (0 if it is not being deleted).

        The API server keeps ``deletionTimestamp`` in whole seconds, so the deletion happened
        up to a second after it: this counts from the end of that second, so that a timeout
        counted from the deletion never ends early."""
        stamp = self.metadata.get("deletionTimestamp")
        if not stamp:
            return 0.0
        deleted = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        return max(0.0, (datetime.now(UTC) - deleted).total_seconds() - 1.0)

    def requeue(self, seconds: float) -> None:
        """Ask to look again in ``seconds``; the smallest request of all phases wins."""
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds

    def event(self, type_: EventType, reason: str, message: str) -> None:
        """Record an Event once the status this reconcile writes is stored."""
        self.events.append((type_, reason, message))

    async def persist(self) -> None:
        """Write the object now, status included: the intent of a risky step, stored before
        the step is taken, so that an operator killed during it resumes the same step."""
        if self._persist is None:
            raise RuntimeError("persist() outside a reconcile")
        await self._persist()


S = TypeVar("S", bound=ObjectScope)

#: A phase acts, records what it saw in the scope, and returns whether the next may run.
Phase = Callable[[S], Awaitable[bool]]


class ObjectReader(Protocol):
    """Where the reconciler reads its objects: an informer's store."""

    def get(self, key: str) -> Object | None: ...


class EventSink(Protocol):
    """Where Events go: an :class:`~kokpit.runtime.events.EventRecorder`."""

    def event(self, regarding: Object, type_: EventType, reason: str, note: str) -> None: ...


@dataclass(frozen=True)
class Outline(Generic[S]):
    """What one operator's reconcile is made of."""

    resource: Resource
    #: Added before any phase runs; removed once every delete phase is done. None: the
    #: operator has nothing to clean up, and a deleted object simply goes.
    finalizer: str | None
    #: A scope around the private copy of the object.
    scope: Callable[[Object], S]
    phases: Sequence[Phase[S]]
    delete_phases: Sequence[Phase[S]]
    #: Compute conditions (and anything else derived) from what the phases recorded.
    update_status: Callable[[S], None]
    #: An object that is paused is left as it is (its finalizer is still ensured).
    paused: Callable[[S], bool] = lambda scope: False
    #: When every phase passed and none asked to come back: look again after this long.
    resync_after: float | None = None
    #: Called once the finalizer is gone: forget what this process remembers of the object,
    #: close what it held open for it.
    forget: Callable[[S], Awaitable[None]] | None = None


class ObjectReconciler(Generic[S]):
    """Runs an :class:`Outline` for each request: the reconciler a Controller calls."""

    def __init__(
        self, client: Client, objects: ObjectReader, recorder: EventSink, outline: Outline[S]
    ) -> None:
        self._client = client
        self._objects = objects
        self._recorder = recorder
        self._outline = outline

    async def reconcile(self, request: Request) -> Result:
        cached = self._objects.get(request.key)
        if cached is None:
            return Result()
        obj = copy.deepcopy(cached)
        helper = PatchHelper(self._client, self._outline.resource, obj)
        scope = self._outline.scope(obj)

        async def persist() -> None:
            self._outline.update_status(scope)
            await helper.patch(obj)

        scope._persist = persist
        if scope.deleting:
            return await self._delete(scope, helper)
        finalizer = self._outline.finalizer
        if finalizer is not None and finalizer not in scope.metadata.get("finalizers", []):
            scope.metadata.setdefault("finalizers", []).append(finalizer)
            await helper.patch(obj)  # before anything exists that must be cleaned up
        if self._outline.paused(scope):
            return Result()
        passed = await self._run(scope, self._outline.phases)
        if passed and self._outline.resync_after is not None:
            scope.requeue(self._outline.resync_after)
        return Result(requeue_after=scope.requeue_after)

    async def _delete(self, scope: S, helper: PatchHelper) -> Result:
        finalizers: list[str] = scope.metadata.get("finalizers") or []
        if self._outline.finalizer is None or self._outline.finalizer not in finalizers:
            return Result()
        if await self._run(scope, self._outline.delete_phases):
            finalizers.remove(self._outline.finalizer)
            await helper.patch(scope.obj)  # the status is written; now let the object go
            if self._outline.forget is not None:
                await self._outline.forget(scope)
        return Result(requeue_after=scope.requeue_after)

    async def _run(self, scope: S, phases: Sequence[Phase[S]]) -> bool:
        """Run phases until one says stop; whatever happens, write the status once, then
        record the Events. Returns whether every phase passed."""
        try:
            for phase in phases:
                if not await phase(scope):
                    return False
            return True
        finally:
            await scope.persist()
            for type_, reason, message in scope.events:
                self._recorder.event(scope.obj, type_, reason, message)
            scope.events.clear()


def owner_reference(owner: Object, *, controller: bool = True) -> dict[str, Any]:
    """An ownerReference to ``owner`` (the controller's, by default): what kokpit puts on
    everything it creates for an object, and what it checks before adopting anything."""
    meta = owner["metadata"]
    ref: dict[str, Any] = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
    }
    if controller:
        ref.update(controller=True, blockOwnerDeletion=True)
    return ref


def controlled_by(obj: Object, owner_uid: str) -> bool:
    """``obj`` carries a controller ownerReference to the object with uid ``owner_uid``."""
    return any(
        ref.get("controller") and ref.get("uid") == owner_uid
        for ref in obj.get("metadata", {}).get("ownerReferences") or []
    )
