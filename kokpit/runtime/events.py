"""Kubernetes Events (``events.k8s.io/v1``) from controllers, deduplicated so that a failure
repeating in a hot loop costs the API server one write per interval, not one per attempt.

The first occurrence of (object, type, reason, note) creates an Event; repeats within
``series_window`` update its ``series`` (count and last time), at most once per
``min_update_interval`` — occurrences in between are counted and written with the next update.
A failure to record an event is logged and never fails the reconcile that reported it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from kokpit.runtime.client import Client, Object
from kokpit.runtime.errors import ApiError
from kokpit.runtime.log import get_logger
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
    _seen: dict[tuple[str, ...], _Seen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._log = get_logger("kokpit.events", controller=self.controller)

    async def event(
        self, regarding: Object, type_: EventType, reason: str, note: str, *, action: str = ""
    ) -> None:
        """Record that ``reason`` happened to ``regarding`` (an object as read from the API)."""
        meta = regarding["metadata"]
        key = (meta.get("uid", ""), type_, reason, note)
        now = self.clock()
        seen = self._seen.get(key)
        try:
            if seen is None or now - seen.first > self.series_window:
                await self._create(regarding, type_, reason, note, action, key, now)
            else:
                seen.count += 1
                if now - seen.last_write >= self.min_update_interval:
                    await self._update_series(seen, now)
        except (ApiError, OSError, TimeoutError) as e:
            self._log.warning("could not record event", extra={"reason": reason, "error": repr(e)})

    async def _create(
        self,
        regarding: Object,
        type_: EventType,
        reason: str,
        note: str,
        action: str,
        key: tuple[str, ...],
        now: float,
    ) -> None:
        meta = regarding["metadata"]
        namespace = meta.get("namespace") or "default"
        name = f"{meta['name']}.{secrets.token_hex(8)}"
        body: dict[str, Any] = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
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
        await self.client.create(EVENTS, body)
        if len(self._seen) >= MAX_TRACKED:
            self._seen = {
                k: v for k, v in self._seen.items() if now - v.first <= self.series_window
            }
        self._seen[key] = _Seen(name, namespace, 1, now, now)

    async def _update_series(self, seen: _Seen, now: float) -> None:
        series = {"series": {"count": seen.count, "lastObservedTime": _micro_time()}}
        await self.client.patch(EVENTS, seen.name, series, namespace=seen.namespace)
        seen.last_write = now
