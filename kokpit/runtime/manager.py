"""The manager runs an operator's long-lived parts: the shared cache, the controllers, leader
election, and the health and metrics server.

Every part is a *runnable*: an object with ``async start()`` that runs until cancelled, and a
``needs_leader`` flag. Runnables that need the leader (controllers, by default) start only
while this replica holds the Lease and are cancelled the moment it loses it; the rest (the
cache, so a new leader starts warm) run on every replica. A runnable that crashes stops the
manager: the process exits and is restarted, with all state in the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kokpit.runtime import metrics
from kokpit.runtime.client import Client
from kokpit.runtime.informer import Cache
from kokpit.runtime.leader import LeaderElectionConfig, LeaderElector
from kokpit.runtime.log import get_logger


class Runnable(Protocol):
    needs_leader: bool

    async def start(self) -> None: ...


@dataclass(frozen=True)
class ManagerOptions:
    #: None runs without leader election (one replica only).
    leader_election: LeaderElectionConfig | None = None
    #: Where ``/healthz``, ``/readyz`` and ``/metrics`` are served; port 0 picks a free one,
    #: None serves nothing.
    health_host: str = "127.0.0.1"
    health_port: int | None = 0


class Manager:
    def __init__(self, client: Client, options: ManagerOptions | None = None) -> None:
        self.client = client
        self.options = options or ManagerOptions()
        self.cache = Cache(client)
        self.elector = (
            LeaderElector(client, self.options.leader_election)
            if self.options.leader_election
            else None
        )
        self._runnables: list[Runnable] = []
        self._log = get_logger("kokpit.manager")
        self.health_port: int | None = None
        self.started = asyncio.Event()

    def add(self, runnable: Runnable) -> None:
        self._runnables.append(runnable)

    @property
    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader

    async def start(self) -> None:
        """Run everything until cancelled (or until leadership is lost, which raises)."""
        runner = await self._serve_health()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.cache.start(), name="cache")
                for r in self._runnables:
                    if not r.needs_leader:
                        group.create_task(r.start(), name=f"runnable-{type(r).__name__}")
                group.create_task(self._lead(), name="leader-election")
                self.started.set()
        finally:
            if runner is not None:
                await runner.cleanup()

    async def _lead(self) -> None:
        leaders = [r for r in self._runnables if r.needs_leader]

        async def run_leaders() -> None:
            async with asyncio.TaskGroup() as group:
                for r in leaders:
                    group.create_task(r.start(), name=f"leader-{type(r).__name__}")

        if self.elector is None:
            await run_leaders()
        else:
            await self.elector.run(run_leaders)

    async def _serve_health(self) -> web.AppRunner | None:
        if self.options.health_port is None:
            return None
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.options.health_host, self.options.health_port)
        await site.start()
        with contextlib.suppress(AttributeError, IndexError, TypeError):
            self.health_port = runner.addresses[0][1]
        self._log.info("serving health and metrics", extra={"port": self.health_port})
        return runner

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.cache.synced():
            return web.Response(text="ok")
        return web.Response(status=503, text="informers not synced")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
