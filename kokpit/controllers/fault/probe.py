"""Active probes of each Machine's host through its executor: is the host reachable, and do its
Kubelet and ContainerRuntime packages pass their ``verify`` step?

Schedule. Each Machine is probed once per ``probe_period``, at its own point in the period:
an offset from a hash of its key, stable across restarts and replicas, so ten thousand hosts
are probed evenly over the period, never all at once. One delayed work queue holds every
Machine's next probe (no timer per Machine); ``probe_concurrency`` workers run them, so at most
that many hosts are being probed at a time.

Results live in memory only (:attr:`Prober.results`): a restarted operator knows nothing until
each Machine's next probe, and the hub treats "not probed yet" as unknown, never as healthy.
After a probe whose verdicts differ from the last one, the fault controller is told to
reconcile the Machine (the same verdicts again would change no record).

Which Machines: those in service (joined as a Node, not being deleted). Their components are
probed only while the Machine is Running: during an install or upgrade the Machine-Operator
holds the package's lock and its verify is expected to fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kokpit.controllers.fault import metrics
from kokpit.controllers.fault.options import FaultOptions
from kokpit.controllers.fault.record import Observation
from kokpit.providers.machine import (
    Credentials,
    Executor,
    Host,
    HostError,
    InvalidCredentials,
    Step,
    packages,
)
from kokpit.runtime import ApiError, Client, Request
from kokpit.runtime.log import get_logger
from kokpit.runtime.queue import ShutDown, WorkQueue
from kokpit.runtime.resources import SECRETS
from kokpit.runtime.store import Store

Object = dict[str, Any]

#: The package kinds whose verify step is a component probe, and the fault each finds.
COMPONENTS = (("Kubelet", "KubeletUnhealthy"), ("ContainerRuntime", "ContainerRuntimeUnhealthy"))
#: What reaches a host that has no component to verify: a step that does nothing.
REACHABILITY = Step(package="kokpit-probe", action="check", version="", script="true")


@dataclass(frozen=True)
class ProbeReport:
    """What one probe found; only what it could tell (a component not probed says nothing)."""

    observations: tuple[Observation, ...]
    at: float = field(default_factory=time.time)


def _verdicts(report: ProbeReport) -> set[tuple[str, bool]]:
    return {(o.type, o.active) for o in report.observations}


def in_service(machine: Mapping[str, Any]) -> bool:
    """A Machine whose node has joined and that is not being deleted: one to watch."""
    meta, status = machine["metadata"], machine.get("status") or {}
    return not meta.get("deletionTimestamp") and bool(status.get("nodeName"))


def offset(key: str, period: float) -> float:
    """The Machine's stable point in the probe period (a hash, uniform even for names that
    differ in one digit: a checksum such as CRC-32 clusters them)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64 * period


def next_probe_in(key: str, period: float, now: float) -> float:
    """Seconds until the Machine's next point in the period (at least a second away)."""
    delay = (offset(key, period) - now) % period
    return delay if delay >= 1.0 else delay + period


class Prober:
    """A runnable: probes the Machines it is told to track, on their schedule."""

    needs_leader = True

    def __init__(
        self,
        client: Client,
        machines: Store,
        package_versions: Store,
        executors: Mapping[str, Executor],
        options: FaultOptions,
        probed: Callable[[Request], None],
    ) -> None:
        self._client = client
        self._machines = machines
        self._package_versions = package_versions
        self._executors = executors
        self._options = options
        self._probed = probed
        self.queue: WorkQueue[Request] = WorkQueue("fault-probe")
        self._tracked: set[Request] = set()
        #: The last probe of each tracked Machine (by namespace/name).
        self.results: dict[str, ProbeReport] = {}
        #: SSH credentials by Machine: (Secret name, credentials, when to read them again).
        self._credentials: dict[str, tuple[str, Credentials, float]] = {}
        self._log = get_logger("kokpit.fault.probe")

    def track(self, request: Request) -> None:
        """Probe this Machine from now on, at its point in the period (idempotent)."""
        if request not in self._tracked:
            self._tracked.add(request)
            delay = next_probe_in(request.key, self._options.probe_period, time.time())
            self.queue.add_after(request, delay)

    async def forget(self, request: Request) -> None:
        """Stop probing this Machine, forget what was found, and close its connections."""
        if request not in self._tracked and request.key not in self.results:
            return
        self._tracked.discard(request)
        self.results.pop(request.key, None)
        self._credentials.pop(request.key, None)
        for executor in self._executors.values():
            await executor.forget(request.key)

    async def start(self) -> None:
        workers = [
            asyncio.create_task(self._worker(), name=f"fault-probe-{i}")
            for i in range(self._options.probe_concurrency)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            await self.queue.shutdown(drain_timeout=1.0)
            for worker in workers:
                worker.cancel()
            for worker in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker

    async def _worker(self) -> None:
        while True:
            try:
                request = await self.queue.get()
            except ShutDown:
                return
            try:
                await self._probe_one(request)
            except Exception:  # a bug must not end the worker: log it, probe again later
                self._log.exception("probe failed unexpectedly", extra={"machine": request.key})
            finally:
                self.queue.done(request)
                if request in self._tracked:
                    delay = next_probe_in(request.key, self._options.probe_period, time.time())
                    self.queue.add_after(request, delay)

    async def _probe_one(self, request: Request) -> None:
        machine = self._machines.get(request.key)
        if machine is None or not in_service(machine):
            await self.forget(request)
            return
        report = await self.probe(machine)
        if report is None:
            metrics.PROBES.labels("skipped").inc()
            return
        unreachable = any(o.type == "HostUnreachable" and o.active for o in report.observations)
        metrics.PROBES.labels("unreachable" if unreachable else "reachable").inc()
        previous = self.results.get(request.key)
        self.results[request.key] = report
        if previous is None or _verdicts(previous) != _verdicts(report):
            self._probed(request)  # the same verdicts again change no record: no reconcile

    async def probe(self, machine: Object) -> ProbeReport | None:
        """Probe one Machine's host; None when nothing could be tried (no such executor, no
        usable credentials: the Machine-Operator reports those on the Machine)."""
        spec = machine["spec"]
        executor = self._executors.get(spec.get("executor", "ssh"))
        if executor is None:
            return None
        host = await self._host(machine)
        if host is None:
            return None
        steps = self._component_steps(machine)
        observations: list[Observation] = []
        try:
            if not steps:
                await self._run(executor, host, REACHABILITY)
            for fault, step in steps:
                result = await self._run(executor, host, step)
                said = result.stderr_tail.strip() or f"exit status {result.exit_status}"
                message = (
                    f"{step.package} verify passes"
                    if result.ok
                    else f"{step.package} verify failed: {said}"
                )
                observations.append(Observation(fault, "Probe", not result.ok, message))
        except HostError as e:
            return ProbeReport((Observation("HostUnreachable", "Probe", True, str(e)),))
        observations.append(Observation("HostUnreachable", "Probe", False, "reachable"))
        return ProbeReport(tuple(observations))

    async def _run(self, executor: Executor, host: Host, step: Step) -> Any:
        timeout = min(step.timeout_seconds, self._options.probe_timeout)
        return await executor.run(host, dataclasses.replace(step, timeout_seconds=timeout))

    def _component_steps(self, machine: Object) -> list[tuple[str, Step]]:
        """The verify steps of the Machine's Kubelet and ContainerRuntime packages, while it
        is Running at its package version."""
        status = machine.get("status") or {}
        if status.get("phase") != "Running":
            return []
        version = self._package_versions.get(str(machine["spec"].get("packageVersion")))
        if version is None:
            return []
        steps: list[tuple[str, Step]] = []
        for kind, fault in COMPONENTS:
            for package in version["spec"].get("packages") or []:
                if package.get("kind") != kind or packages.problems(package):
                    continue
                node = str(status.get("nodeName") or machine["metadata"]["name"])
                step = packages.step(package, "verify", node_name=node)
                if step is not None:
                    steps.append((fault, step))
        return steps

    async def _host(self, machine: Object) -> Host | None:
        spec, meta = machine["spec"], machine["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        credentials: Credentials | None = None
        if spec.get("executor", "ssh") == "ssh":
            name = str((spec.get("sshSecretRef") or {}).get("name"))
            credentials = await self._ssh_credentials(key, meta["namespace"], name)
            if credentials is None:
                return None
        return Host(key, str(spec.get("address")), int(spec.get("port", 22)), credentials)

    async def _ssh_credentials(self, key: str, namespace: str, name: str) -> Credentials | None:
        """The Machine's SSH credentials, read again after ``credentials_ttl``; None when they
        cannot be read or used (the Machine-Operator reports that on the Machine)."""
        cached = self._credentials.get(key)
        if cached is not None and cached[0] == name and time.monotonic() < cached[2]:
            return cached[1]
        try:
            secret = await self._client.get(SECRETS, name, namespace=namespace)
            credentials = Credentials.from_secret_data(secret.get("data") or {}, secret=name)
        except (ApiError, InvalidCredentials, OSError, TimeoutError) as e:
            self._credentials.pop(key, None)
            self._log.info(
                "no usable SSH credentials; not probed", extra={"machine": key, "error": str(e)}
            )
            return None
        if cached is not None and cached[1] != credentials:
            for executor in self._executors.values():
                await executor.forget(key)  # a re-keyed host: no connection with the old key
        self._credentials[key] = (
            name,
            credentials,
            time.monotonic() + self._options.credentials_ttl,
        )
        return credentials
