"""Simulated hosts, in process: the ``sim`` executor, for tests and benchmarks at scale.

A simulated host does not run scripts; it plays what a well-behaved package's steps would do
to it: ``check`` prints the installed version, ``install``/``upgrade`` set it, ``remove``
clears it, ``verify`` succeeds when the version is the one asked for; ``restart`` and
``reboot`` (remediation actions) succeed and are only recorded, so tests can count them.
Latency and failures are settable, globally or per host, so a test can make one host slow or
broken; a host can be made unreachable, or one of its packages unhealthy (installed, but its
``verify`` fails), as a probe of the fault hub would find a broken kubelet.

Simulated hosts live in one process. An operator that only probes hosts another process
provisioned (the fault hub beside the Machine-Operator) starts its simulator with
``provisioned=True``: a package a host has not seen is taken as installed at the version asked.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from kokpit.providers.machine import Host, HostUnreachable, Step, StepResult


@dataclass
class SimHost:
    """One simulated host's state."""

    #: Installed package → version.
    packages: dict[str, str] = field(default_factory=dict)
    reachable: bool = True
    #: Overrides of the executor's defaults for this host.
    latency: float | None = None
    failure_rate: float | None = None
    #: Packages whose ``verify`` fails although they are installed (a broken component).
    unhealthy: set[str] = field(default_factory=set)
    #: Every step run here, in order: (package, action).
    history: list[tuple[str, str]] = field(default_factory=list)

    def count(self, action: str) -> int:
        """How many steps of ``action`` ran here (restarts and reboots, say)."""
        return sum(1 for _, done in self.history if done == action)


class SimExecutor:
    """Runs steps on :class:`SimHost` objects, created on first use, keyed by machine."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        failure_rate: float = 0.0,
        seed: int = 0,
        provisioned: bool = False,
    ) -> None:
        self.latency = latency
        self.failure_rate = failure_rate
        #: Hosts were provisioned elsewhere: a package not seen here is at the version asked.
        self.provisioned = provisioned
        self.hosts: dict[str, SimHost] = {}
        self._random = random.Random(seed)

    def host(self, key: str) -> SimHost:
        return self.hosts.setdefault(key, SimHost())

    async def run(self, host: Host, step: Step) -> StepResult:
        sim = self.host(host.key)
        if not sim.reachable:
            raise HostUnreachable(f"{host.address}:{host.port}: simulated host is unreachable")
        latency = self.latency if sim.latency is None else sim.latency
        if latency:
            await asyncio.sleep(latency)
        sim.history.append((step.package, step.action))
        if self.provisioned and step.version:
            sim.packages.setdefault(step.package, step.version)
        if step.action == "check":
            return StepResult(0, stdout=sim.packages.get(step.package, ""))
        failure_rate = self.failure_rate if sim.failure_rate is None else sim.failure_rate
        if failure_rate and self._random.random() < failure_rate:
            return StepResult(1, stderr=f"{step.package} {step.action}: simulated failure")
        if step.action in ("restart", "reboot"):
            return StepResult(0)  # recorded in history: tests count them
        if step.action in ("install", "upgrade"):
            sim.packages[step.package] = step.version
        elif step.action == "remove":
            sim.packages.pop(step.package, None)
        elif sim.packages.get(step.package) != step.version:  # verify
            return StepResult(1, stderr=f"{step.package} is not at {step.version}")
        elif step.package in sim.unhealthy:
            return StepResult(1, stderr=f"{step.package}: simulated unhealthy")
        return StepResult(0)

    async def forget(self, machine: str) -> None:
        """Nothing to close: a simulated host keeps its state, as a real one would."""

    async def close(self) -> None:
        return None
