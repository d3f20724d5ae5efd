"""A process that asks the guard many times at once, as an operator's replica would:
``python -m tests.e2e.guard_asker KUBECONFIG ACTION PREFIX COUNT`` prints, as JSON, the ids
it was allowed. Two of these at once are two operators racing for one budget."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import cast

from kokpit.api.v1alpha1.riskpolicy import RiskyAction
from kokpit.providers.guard import RiskRequest
from kokpit.providers.guard.local import LocalGuard
from kokpit.runtime import Cache, Client, ClientConfig, EventRecorder


async def main(kubeconfig: Path, action: str, prefix: str, count: int) -> None:
    async with Client(ClientConfig.from_kubeconfig(kubeconfig)) as client:
        cache = Cache(client)
        recorder = EventRecorder(client, "kokpit.io/guard-e2e", prefix)
        guard = LocalGuard.on(cache, f"asker-{prefix}", recorder=recorder)
        task = asyncio.create_task(cache.start())
        await cache.wait_synced()
        requests = [
            RiskRequest(cast(RiskyAction, action), f"{prefix}-{n}", f"Machine e2e/{prefix}-{n}")
            for n in range(count)
        ]
        verdicts = await asyncio.gather(*(guard.acquire(r) for r in requests))
        await recorder.close()  # its Events are written in the background: write them all
        task.cancel()  # the informers stop before their connection closes
        with contextlib.suppress(asyncio.CancelledError):
            await task
        allowed = [r.id for r, v in zip(requests, verdicts, strict=True) if v.allowed]
        print(json.dumps({"allowed": allowed, "reasons": sorted({v.reason for v in verdicts})}))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])))
