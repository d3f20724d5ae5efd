"""The three programs compared by :mod:`bench.runtime`, each run as its own process.

Each keeps every Widget in one namespace at ``status.observedGeneration == metadata.generation``
— the most trivial reconcile there is, so what is measured is the machinery:

- ``floor``: a bare client, LIST then WATCH, one status PATCH per object that needs it, by 32
  workers taking objects from a plain FIFO; no cache, no deduplication, no rate limit, no
  retries. The least machinery that does the job with bounded concurrency.
- ``kokpit``: kokpit's runtime — a shared informer, a work queue, a controller.
- ``kopf-default``: kopf as its first-steps guide writes it: a plain ``def`` create/update/resume
  handler that sets the status through kopf's ``patch``, every setting at its default (no
  worker limit, a connection pool without a limit, sync handlers run in a thread pool).
- ``kopf``: the same handler as a kopf user at this scale would configure it (see
  :class:`KopfTuning`): ``async def`` (no thread pool), a worker limit with a short idle timeout
  (kopf keeps one worker per object alive for ``idle_timeout``, so with a limit and the default
  5 s, slots sit idle), and a bounded connection pool (kopf's own client has no limit).

Both kopf targets turn event posting off, so kopf is not charged for writes it need not make.

    python -m bench.runtime_targets {floor,kokpit,kopf,kopf-default} --namespace NS --data-dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fixtures.samples import WIDGETS
from kokpit.local.components import Layout
from kokpit.pki import ADMIN
from kokpit.runtime import (
    Client,
    ClientConfig,
    Controller,
    ControllerOptions,
    Manager,
    ManagerOptions,
    Request,
    Result,
    generation_changed,
)

CONCURRENCY = 32


@dataclass(frozen=True)
class KopfTuning:
    """kopf's settings for the ``kopf`` target (None: the default configuration)."""

    #: ``settings.queueing.worker_limit``: per-object workers running at once (None: no
    #: limit, kopf's default; written ``none``).
    worker_limit: int | None = 64
    #: ``settings.queueing.idle_timeout``: how long a finished object's worker lingers.
    idle_timeout: float = 0.1
    #: The connection pool's limit (kopf's own session has ``limit=0``, i.e. none).
    connections: int = 64

    @classmethod
    def parse(cls, text: str) -> KopfTuning:
        """``worker_limit=64,idle_timeout=0.1,connections=64`` (missing keys: defaults;
        ``worker_limit=none``: no limit)."""
        fields = dict(part.split("=", 1) for part in text.split(",") if part)
        defaults = asdict(cls())
        if unknown := set(fields) - set(defaults):
            raise ValueError(f"unknown kopf settings {sorted(unknown)}; known: {sorted(defaults)}")
        values: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "worker_limit":
                values[key] = None if value == "none" else int(value)
            else:
                values[key] = type(defaults[key])(value)
        return cls(**values)

    def text(self) -> str:
        """The ``--kopf-tuning`` string that parses back to this tuning, every key named."""
        workers = "none" if self.worker_limit is None else str(self.worker_limit)
        return (
            f"worker_limit={workers},idle_timeout={self.idle_timeout},"
            f"connections={self.connections}"
        )

    def describe(self) -> dict[str, float | None]:
        return asdict(self)


def needs_write(obj: dict[str, Any]) -> bool:
    return bool(
        (obj.get("status") or {}).get("observedGeneration") != obj["metadata"]["generation"]
    )


async def write_status(client: Client, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    await client.patch(
        WIDGETS,
        meta["name"],
        {"status": {"observedGeneration": meta["generation"]}},
        namespace=meta["namespace"],
        subresource="status",
    )


def client_config(kubeconfig: Path) -> ClientConfig:
    # A benchmark wants the machinery, not the client-side throttle, to be the limit.
    return ClientConfig.from_kubeconfig(kubeconfig, qps=5000, burst=10000)


async def floor(namespace: str, kubeconfig: Path) -> None:
    async with Client(client_config(kubeconfig)) as client:
        todo: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def worker() -> None:
            while True:
                await write_status(client, await todo.get())

        workers = [asyncio.create_task(worker()) for _ in range(CONCURRENCY)]
        listed = await client.list(WIDGETS, namespace=namespace)
        for obj in listed.items:
            if needs_write(obj):
                todo.put_nowait(obj)
        rv = listed.resource_version
        try:
            while True:
                async for event in client.watch(WIDGETS, namespace=namespace, resource_version=rv):
                    rv = event.object["metadata"]["resourceVersion"]
                    if event.type in ("ADDED", "MODIFIED") and needs_write(event.object):
                        todo.put_nowait(event.object)
        finally:
            for task in workers:
                task.cancel()


async def kokpit(namespace: str, kubeconfig: Path) -> None:
    async with Client(client_config(kubeconfig)) as client:
        manager = Manager(client, ManagerOptions(health_port=None))
        informer = manager.cache.informer(WIDGETS, namespace=namespace)

        class ObservedGeneration:
            async def reconcile(self, request: Request) -> Result:
                obj = informer.store.get(request.key)
                if obj is not None and needs_write(obj):
                    await write_status(client, obj)
                return Result()

        options = ControllerOptions(max_concurrent_reconciles=CONCURRENCY)
        controller = Controller("widgets", ObservedGeneration(), options)
        manager.add(controller.watch(informer, predicate=generation_changed))
        await manager.start()


def kopf_main(namespace: str, data_dir: Path, tuning: KopfTuning | None) -> None:
    import aiohttp
    import kopf  # benchmark-only dependency

    pki = Layout(data_dir).pki
    server = ClientConfig.from_kubeconfig(Layout(data_dir).kubeconfig).server

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False
        if tuning is not None:
            settings.queueing.worker_limit = tuning.worker_limit
            settings.queueing.idle_timeout = tuning.idle_timeout

    if tuning is None:

        @kopf.on.login()
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(
                server=server,
                ca_path=str(pki.ca_cert),
                certificate_path=str(pki.client_cert(ADMIN)),
                private_key_path=str(pki.client_key(ADMIN)),
            )

        @kopf.on.resume(WIDGETS.group, WIDGETS.version, WIDGETS.plural)
        @kopf.on.create(WIDGETS.group, WIDGETS.version, WIDGETS.plural)
        @kopf.on.update(WIDGETS.group, WIDGETS.version, WIDGETS.plural, field="spec")
        def observe(meta: Any, patch: Any, **_: Any) -> None:
            patch.status["observedGeneration"] = meta["generation"]

    else:
        connections = tuning.connections

        @kopf.on.login()
        async def login_pooled(**_: Any) -> kopf.AiohttpSession:
            tls = ssl.create_default_context(cafile=str(pki.ca_cert))
            tls.load_cert_chain(str(pki.client_cert(ADMIN)), str(pki.client_key(ADMIN)))
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=connections, ssl=tls)
            )
            return kopf.AiohttpSession(server=server, aiohttp_session=session)

        @kopf.on.resume(WIDGETS.group, WIDGETS.version, WIDGETS.plural)
        @kopf.on.create(WIDGETS.group, WIDGETS.version, WIDGETS.plural)
        @kopf.on.update(WIDGETS.group, WIDGETS.version, WIDGETS.plural, field="spec")
        async def observe_async(meta: Any, patch: Any, **_: Any) -> None:
            patch.status["observedGeneration"] = meta["generation"]

    kopf.run(standalone=True, namespaces=[namespace])


TARGETS = ("floor", "kokpit", "kopf", "kopf-default")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--kopf-tuning", type=KopfTuning.parse, default=KopfTuning())
    args = parser.parse_args()
    kubeconfig = Layout(args.data_dir).kubeconfig
    if args.target == "kopf":
        kopf_main(args.namespace, args.data_dir, args.kopf_tuning)
    elif args.target == "kopf-default":
        kopf_main(args.namespace, args.data_dir, None)
    else:
        target = floor if args.target == "floor" else kokpit
        asyncio.run(target(args.namespace, kubeconfig))


if __name__ == "__main__":
    main()
