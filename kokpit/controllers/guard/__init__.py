"""The guard as a service of its own (``kokpit operator guard``): the guard of
:mod:`kokpit.providers.guard` over HTTPS, for operators that cannot hold one in-process.
kokpit's own operators ask in-process; this serves everyone else, authenticated and authorized
by the meta-cluster (:mod:`.reviews`), on every replica (:mod:`.server`)."""

from __future__ import annotations

from pathlib import Path

from kokpit.api.v1alpha1 import MACHINES
from kokpit.controllers.guard.reviews import Caller, Reviews
from kokpit.controllers.guard.server import GuardServer
from kokpit.providers.guard.health import MachineHealth
from kokpit.providers.guard.local import LocalGuard
from kokpit.runtime import EventRecorder, Manager


def setup(
    manager: Manager,
    recorder: EventRecorder,
    *,
    host: str,
    port: int,
    cert_file: Path,
    key_file: Path,
) -> GuardServer:
    """The guard's HTTPS server, added to ``manager`` (it serves on every replica)."""
    guard = LocalGuard.on(
        manager.cache,
        f"{recorder.controller} ({recorder.instance})",
        recorder=recorder,
        health=MachineHealth(manager.cache.informer(MACHINES).store),
    )
    server = GuardServer(
        guard, Reviews(manager.client), host=host, port=port, cert_file=cert_file, key_file=key_file
    )
    manager.add(server)
    return server


__all__ = ["Caller", "GuardServer", "Reviews", "setup"]
