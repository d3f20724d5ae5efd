"""Informers: a local, indexed copy of one kind of object, kept current by LIST then WATCH.

An informer lists (paginated), then watches from the list's resourceVersion with bookmarks,
remembering the last version it saw. When a watch ends (the server's timeout or a dropped
connection) it watches again from there, so no event is lost. When that version is too old
(410 Gone: compacted, or the API server restarted) it lists again and *diffs* the result
against its store, emitting the deletes it missed. Errors back off exponentially; the
informer never gives up.

Handlers are plain functions called on the event loop; they should only enqueue keys. While a
handler runs, :func:`event_origin` says what the event is: a change someone made, what the
first list found (or a replay to a new handler), or the echo of this process's own write (see
:meth:`~kokpit.runtime.client.Client.wrote`). Controllers queue the last two at a
low priority, so a backlog of their own work never delays a change someone else made.
:class:`Cache` shares informers: two controllers watching the same kind with the same scope
share one LIST+WATCH.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from kokpit.runtime import errors
from kokpit.runtime.client import Client, Object
from kokpit.runtime.log import get_logger
from kokpit.runtime.ratelimit import ExponentialBackoff
from kokpit.runtime.resources import Resource
from kokpit.runtime.store import IndexFunc, Store, object_key

Transform = Callable[[Object], Object]


def strip_unneeded(obj: Object) -> Object:
    """The default transform: drop ``managedFields`` and the last-applied annotation.

    They are often the largest part of an object and no controller reads them; dropping them
    roughly halves an informer's memory for typical objects.
    """
    meta = obj.get("metadata")
    if meta:
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if annotations:
            annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    return obj


class Origin(enum.Enum):
    """What an event handler is being told about."""

    #: Someone changed the object (or created or deleted it): the default.
    CHANGE = "change"
    #: The first list, or the replay of the store to a handler added later: nothing changed.
    LISTED = "listed"
    #: The echo of a write this process made (its client made that resourceVersion).
    OWN_WRITE = "own-write"


_ORIGIN: ContextVar[Origin] = ContextVar("kokpit_event_origin", default=Origin.CHANGE)


def event_origin() -> Origin:
    """The origin of the event being handled (handlers are called synchronously, so the
    dispatcher sets it around each call; outside a dispatch it is ``CHANGE``)."""
    return _ORIGIN.get()


@contextlib.contextmanager
def dispatching(origin: Origin) -> Iterator[None]:
    """Handlers called inside are told the events are of ``origin``."""
    token = _ORIGIN.set(origin)
    try:
        yield
    finally:
        _ORIGIN.reset(token)


class EventHandler(Protocol):
    def on_add(self, obj: Object) -> None: ...
    def on_update(self, old: Object, new: Object) -> None: ...
    def on_delete(self, obj: Object) -> None: ...


@dataclass(frozen=True)
class Scope:
    """What one informer watches; informers are shared per scope."""

    resource: Resource
    namespace: str | None = None
    label_selector: str | None = None
    field_selector: str | None = None
    metadata_only: bool = False


@dataclass
class Informer:
    client: Client
    scope: Scope
    transform: Transform = strip_unneeded
    page_size: int = 500
    #: The server ends each watch after about this long (jittered, as client-go does).
    watch_timeout: int = 300
    store: Store = field(default_factory=Store)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    _handlers: list[EventHandler] = field(default_factory=list)
    _resource_version: str | None = None
    #: How many times the informer has listed (1 after the first sync; more after 410s).
    relists: int = 0
    _backoff: ExponentialBackoff = field(default_factory=lambda: ExponentialBackoff(0.2, 30.0))

    def __post_init__(self) -> None:
        self._log = get_logger("kokpit.informer", resource=str(self.scope.resource))

    @property
    def resource_version(self) -> str | None:
        """The last resourceVersion seen: where the next watch resumes."""
        return self._resource_version

    def add_handler(self, handler: EventHandler) -> None:
        """Register ``handler``; if already synced, it first gets an add for every object."""
        self._handlers.append(handler)
        if self.synced.is_set():
            with dispatching(Origin.LISTED):
                for obj in self.store.list():
                    handler.on_add(obj)

    def add_indexers(self, indexers: dict[str, IndexFunc]) -> None:
        self.store.add_indexers(indexers)

    async def wait_synced(self) -> None:
        """Until the first list is in the store."""
        await self.synced.wait()

    async def start(self) -> None:
        """LIST, then WATCH forever (until cancelled)."""
        relist = True
        while True:
            try:
                if relist:
                    await self._list()
                    relist = False
                await self._watch()
            except errors.Gone:
                self._log.info(
                    "resourceVersion expired; relisting", extra={"rv": self._resource_version}
                )
                relist = True
            except (errors.ApiError, aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
                delay = self._backoff.when("watch")
                self._log.warning(
                    "list/watch failed; retrying",
                    extra={"error": repr(e), "delay_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        s = self.scope
        listed = await self.client.list(
            s.resource,
            namespace=s.namespace,
            label_selector=s.label_selector,
            field_selector=s.field_selector,
            limit=self.page_size,
            metadata_only=s.metadata_only,
        )
        # The first list only tells what exists; a relist (after a 410) finds real changes.
        origin = Origin.CHANGE if self.synced.is_set() else Origin.LISTED
        seen = set()
        for raw in listed.items:
            obj = self.transform(raw)
            key = object_key(obj)
            seen.add(key)
            old = self.store.upsert(obj)
            if old is None:
                self._dispatch(origin, "on_add", obj)
            elif _rv(old) != _rv(obj):
                self._dispatch(origin, "on_update", old, obj)
        for key in set(self.store.keys()) - seen:  # deleted while we were not watching
            gone = self.store.delete(key)
            if gone is not None:
                self._dispatch(Origin.CHANGE, "on_delete", gone)
        self._resource_version = listed.resource_version
        self.relists += 1
        self.synced.set()

    async def _watch(self) -> None:
        s = self.scope
        if self._resource_version is None:
            raise RuntimeError("watch before the first list")
        timeout = int(self.watch_timeout * (1 + random.random()))
        async for event in self.client.watch(
            s.resource,
            resource_version=self._resource_version,
            namespace=s.namespace,
            label_selector=s.label_selector,
            field_selector=s.field_selector,
            timeout_seconds=timeout,
            metadata_only=s.metadata_only,
        ):
            self._backoff.forget("watch")  # the connection works again
            rv = _rv(event.object)
            if event.type == "BOOKMARK":
                self._resource_version = rv
                continue
            own = self.client.wrote(s.resource, event.object)  # before the transform drops it
            obj = self.transform(event.object)
            origin = Origin.OWN_WRITE if own else Origin.CHANGE
            if event.type == "DELETED":
                old = self.store.delete(object_key(obj))
                self._dispatch(origin, "on_delete", old if old is not None else obj)
            else:
                old = self.store.upsert(obj)
                if old is None:
                    self._dispatch(origin, "on_add", obj)
                else:
                    self._dispatch(origin, "on_update", old, obj)
            self._resource_version = rv

    def _dispatch(self, origin: Origin, method: str, *objs: Object) -> None:
        with dispatching(origin):
            for handler in self._handlers:
                try:
                    getattr(handler, method)(*objs)
                except Exception:
                    self._log.exception("event handler failed", extra={"handler": repr(handler)})


def _rv(obj: Object) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))


@dataclass
class Cache:
    """Shared informers, one per :class:`Scope`, started together by the manager."""

    client: Client
    transform: Transform = strip_unneeded
    _informers: dict[Scope, Informer] = field(default_factory=dict)
    _tasks: dict[Scope, asyncio.Task[None]] = field(default_factory=dict)
    _started: bool = False

    def informer(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
    ) -> Informer:
        """The shared informer for this scope, created (and started, if the cache runs) once."""
        scope = Scope(resource, namespace, label_selector, field_selector, metadata_only)
        informer = self._informers.get(scope)
        if informer is None:
            informer = Informer(self.client, scope, transform=self.transform)
            self._informers[scope] = informer
            if self._started:
                self._run(scope, informer)
        return informer

    async def start(self) -> None:
        """Run every informer (and those asked for later) until cancelled."""
        self._started = True
        for scope, informer in self._informers.items():
            self._run(scope, informer)
        try:
            await asyncio.Event().wait()
        finally:
            for task in self._tasks.values():
                task.cancel()
            for task in self._tasks.values():
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self._informers.values())

    async def wait_synced(self) -> None:
        for informer in list(self._informers.values()):
            await informer.synced.wait()

    def _run(self, scope: Scope, informer: Informer) -> None:
        self._tasks[scope] = asyncio.get_running_loop().create_task(
            informer.start(), name=f"informer-{scope.resource}"
        )
        self._tasks[scope].add_done_callback(_log_crash)


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        get_logger("kokpit.informer").error(
            "informer stopped", exc_info=task.exception(), extra={"task": task.get_name()}
        )
