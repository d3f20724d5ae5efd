"""A benchmark stopped with SIGTERM (or Ctrl-C) stops everything it started.

SIGTERM's default action ends the process at once, so no ``finally`` runs and the local
meta-cluster a benchmark started (etcd, kube-apiserver, ...) outlives it. Each benchmark's
``main`` calls :func:`stop_on_sigterm` first: SIGTERM then raises ``KeyboardInterrupt`` like
Ctrl-C, and the ``finally`` blocks that stop clusters and operators run.
"""

from __future__ import annotations

import signal
from types import FrameType


def stop_on_sigterm() -> None:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
