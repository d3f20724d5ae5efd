"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's algorithm.

- A candidate takes the Lease when it does not exist, when it holds it already, or when the
  holder has not renewed it for ``lease_duration``. Expiry is judged by *our* clock from when
  we last saw the record change, never by comparing the holder's timestamps with ours, so
  clock skew between replicas cannot make two leaders.
- Every write is conditional on the Lease's resourceVersion: of two candidates racing, one
  gets a Conflict and stays a follower.
- The leader renews every ``retry_period``; if it has not renewed successfully for
  ``renew_deadline`` it stops leading at once (``renew_deadline < lease_duration`` leaves a
  margin before anyone else may take over).
- On a clean shutdown the leader releases the Lease so a follower takes over without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kokpit.runtime import errors, metrics
from kokpit.runtime.client import Client
from kokpit.runtime.log import get_logger
from kokpit.runtime.resources import LEASES


@dataclass(frozen=True)
class LeaderElectionConfig:
    namespace: str
    name: str
    identity: str
    #: How long followers wait after the last renewal before taking over.
    lease_duration: float = 15.0
    #: How long the leader keeps trying to renew before it gives up leading.
    renew_deadline: float = 10.0
    #: How often to try to acquire or renew.
    retry_period: float = 2.0
    release_on_cancel: bool = True

    def __post_init__(self) -> None:
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")


def new_identity() -> str:
    """``<hostname>_<uuid>``, as client-go's: unique per process. Not the PID: in a container
    every process is PID 1 again when its container restarts in the same pod (same
    hostname), and it would take the Lease its dead predecessor held as if still its own."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


class LeadershipLost(Exception):
    """This replica stopped being the leader; it must stop all leader-only work."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, client: Client, config: LeaderElectionConfig) -> None:
        self.client = client
        self.config = config
        self.is_leader = False
        self._observed: tuple[Any, ...] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0  # monotonic time it last changed
        self._lease: dict[str, Any] | None = None
        self._log = get_logger(
            "kokpit.leader", lease=f"{config.namespace}/{config.name}", identity=config.identity
        )
        self._gauge = metrics.LEADER.labels(config.name)

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Wait to become leader, then run ``lead()`` while leading.

        Returns when ``lead`` returns; raises :class:`LeadershipLost` (after cancelling
        ``lead``) when renewal fails. Cancelling ``run`` releases the lease if configured.
        """
        await self._acquire()
        task = asyncio.create_task(lead(), name="leader-work")
        renewer = asyncio.create_task(self._renew_until_lost(), name="leader-renew")
        try:
            done, _ = await asyncio.wait({task, renewer}, return_when=asyncio.FIRST_COMPLETED)
            if renewer in done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                renewer.result()  # raises LeadershipLost
            else:
                task.result()
        finally:
            renewer.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, LeadershipLost):
                await renewer
            if self.is_leader and self.config.release_on_cancel:
                await self._release()
            self._set_leader(False)

    async def _acquire(self) -> None:
        while True:
            if await self._try_acquire_or_renew():
                break
            await asyncio.sleep(self.config.retry_period * (1 + 0.2 * random.random()))
        self._set_leader(True)
        self._log.info("became leader")

    async def _renew_until_lost(self) -> None:
        last_renew = time.monotonic()
        while True:
            await asyncio.sleep(self.config.retry_period)
            if await self._try_acquire_or_renew():
                last_renew = time.monotonic()
            elif time.monotonic() - last_renew >= self.config.renew_deadline:
                self._set_leader(False)
                self._log.warning("lost leadership: could not renew within the renew deadline")
                raise LeadershipLost(self.config.name)

    async def _try_acquire_or_renew(self) -> bool:
        c = self.config
        now = _now()
        try:
            lease = await asyncio.wait_for(
                self.client.get(LEASES, c.name, namespace=c.namespace), c.retry_period
            )
        except errors.NotFound:
            fresh = {
                "holderIdentity": c.identity,
                "leaseDurationSeconds": int(c.lease_duration),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            }
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": c.name, "namespace": c.namespace},
                "spec": fresh,
            }
            return await self._write(self.client.create(LEASES, body))
        except (errors.ApiError, OSError, TimeoutError) as e:
            self._log.debug("could not read lease", extra={"error": repr(e)})
            return False

        spec: dict[str, Any] = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        expired = time.monotonic() >= self._observed_at + c.lease_duration
        if holder and holder != c.identity and not expired:
            return False
        if holder != c.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(
            holderIdentity=c.identity, renewTime=now, leaseDurationSeconds=int(c.lease_duration)
        )
        lease["spec"] = spec
        return await self._write(self.client.replace(LEASES, lease))

    async def _write(self, call: Awaitable[dict[str, Any]]) -> bool:
        try:
            written = await asyncio.wait_for(call, self.config.retry_period)
        except (errors.Conflict, errors.AlreadyExists):
            return False
        except (errors.ApiError, OSError, TimeoutError) as e:
            self._log.debug("could not write lease", extra={"error": repr(e)})
            return False
        spec = written["spec"]
        self._observed = (spec.get("holderIdentity"), spec.get("renewTime"))
        self._observed_at = time.monotonic()
        return True

    async def _release(self) -> None:
        c = self.config
        with contextlib.suppress(errors.ApiError, OSError, TimeoutError):
            lease = await self.client.get(LEASES, c.name, namespace=c.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") == c.identity:
                lease["spec"].update(holderIdentity=None, leaseDurationSeconds=1, renewTime=_now())
                await asyncio.wait_for(self.client.replace(LEASES, lease), c.retry_period)
                self._log.info("released leadership")

    def _set_leader(self, leading: bool) -> None:
        self.is_leader = leading
        self._gauge.set(1 if leading else 0)
