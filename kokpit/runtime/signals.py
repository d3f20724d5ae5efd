"""Stopping an operator on SIGTERM or SIGINT, as controller-runtime's ``signals`` package does.

The first signal cancels the operator's main coroutine: its controllers stop, a leader releases
its Lease (so a follower takes over at once instead of waiting the Lease out) and the health
server closes. A second signal ends the process at once. Without this, SIGTERM (what the
kubelet sends a pod's containers) killed an operator without any of that, and in a container,
where the operator is PID 1, the kernel ignores a signal without a handler: SIGTERM did
nothing, and the pod lingered until its grace period ran out and SIGKILL came.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Coroutine
from typing import Any

from kokpit.runtime.log import get_logger

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run(main: Coroutine[Any, Any, None]) -> int:
    """Run ``main`` until it returns or a signal stops it; the process's exit code (0 after a
    clean stop by signal: what was asked for happened)."""
    return asyncio.run(_until_signalled(main))


async def _until_signalled(main: Coroutine[Any, Any, None]) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    received: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        if received:  # the second: no more waiting
            os._exit(128 + sig)
        received.append(sig)
        get_logger("kokpit.signals", signal=sig.name).info("stopping")
        task.cancel()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    try:
        await task
    except asyncio.CancelledError:
        if not received:
            raise
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
    return 0
