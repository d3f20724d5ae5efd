"""Watching a benchmark's objects converge, cheaply.

Polling with a LIST of ten thousand objects twice a second costs the API server and the two
cores more than some of the targets being measured. :class:`Convergence` instead LISTs once
and then follows one WATCH: each status write the target makes arrives as one event, so the
observer's cost grows with the target's work and is the same for every target. It also
records the count of converged objects over time, for the convergence plots.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from kokpit.runtime import Client, Gone, Resource


class Convergence:
    """Objects in ``namespace`` whose ``status.observedGeneration`` reached what is required.

    Required is the object's own generation when first seen; :meth:`require` raises it after
    the benchmark edits an object (the edit's response carries the new generation, so there is
    no race with the watch).
    """

    def __init__(self, client: Client, resource: Resource, namespace: str) -> None:
        self.client, self.resource, self.namespace = client, resource, namespace
        self._required: dict[str, int] = {}
        self._observed: dict[str, int] = {}
        self._behind: set[str] = set()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        #: ``(seconds since :meth:`mark`, objects converged)``, at most one point per 0.1 s.
        self.timeline: list[tuple[float, int]] = []

    async def __aenter__(self) -> Convergence:
        listed = await self.client.list(self.resource, namespace=self.namespace, limit=2000)
        for obj in listed.items:
            self._see(obj, first=True)
        self._task = asyncio.create_task(self._follow(listed.resource_version))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def behind(self) -> int:
        return len(self._behind)

    def mark(self) -> None:
        """Start a new timeline at zero (the moment a target starts, or edits are made)."""
        self._started = time.monotonic()
        self.timeline = [(0.0, len(self._required) - self.behind)]

    def require(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        self._required[name] = obj["metadata"]["generation"]
        self._update(name)

    async def wait(self, limit: float) -> float:
        """Seconds from :meth:`mark` until nothing is behind; TimeoutError after ``limit``."""
        deadline = self._started + limit
        while self._behind:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.behind} objects not converged within {limit:.0f} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, 1.0))
        return round(time.monotonic() - self._started, 2)

    def _see(self, obj: dict[str, Any], *, first: bool = False) -> None:
        meta = obj["metadata"]
        name = meta["name"]
        if first or name not in self._required:
            self._required[name] = meta["generation"]
        self._observed[name] = (obj.get("status") or {}).get("observedGeneration") or 0
        self._update(name)

    def _update(self, name: str) -> None:
        if self._observed.get(name, 0) >= self._required[name]:
            self._behind.discard(name)
        else:
            self._behind.add(name)
        now = round(time.monotonic() - self._started, 1)
        point = (now, len(self._required) - len(self._behind))
        if self.timeline and self.timeline[-1][0] == now:
            self.timeline[-1] = point
        else:
            self.timeline.append(point)
        self._changed.set()

    async def _follow(self, resource_version: str) -> None:
        while True:
            try:
                async for event in self.client.watch(
                    self.resource, namespace=self.namespace, resource_version=resource_version
                ):
                    resource_version = event.object["metadata"]["resourceVersion"]
                    if event.type in ("ADDED", "MODIFIED"):
                        self._see(event.object)
            except Gone:
                listed = await self.client.list(self.resource, namespace=self.namespace)
                for obj in listed.items:
                    self._see(obj)
                resource_version = listed.resource_version
