"""Where a Machine's package steps run.

The Machine-Operator decides *which* step of *which* package runs next (from the check steps
and the desired MachinePackageVersion); an :class:`Executor` runs one step on one host and
says how it ended. Two executors: ``ssh`` runs the step's script on the real host (host key
pinned, never trusted on first use), ``sim`` simulates hosts in process for scale tests.

A step never assumes what an earlier, possibly interrupted step did: the operator runs the
package's ``check`` again first, so executors need no memory of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

Action = Literal["check", "install", "upgrade", "remove", "verify"]

#: How much of a failed step's stderr reaches the Machine's status (its tail).
STDERR_TAIL = 2048


@dataclass(frozen=True)
class Credentials:
    """How to log in to a host: from the Machine's SSH Secret."""

    username: str
    private_key: bytes = field(repr=False)
    #: known_hosts lines pinning the host key; a host presenting another key is refused.
    known_hosts: bytes = field(repr=False)


@dataclass(frozen=True)
class Host:
    """One machine's host."""

    #: The Machine's namespace/name: names the host in logs and in the simulator.
    key: str
    address: str
    port: int = 22
    credentials: Credentials | None = None


@dataclass(frozen=True)
class Step:
    """One step of one package: a shell script run with ``/bin/sh -eu``."""

    package: str
    action: Action
    #: The version the package should have once the step has run.
    version: str
    script: str
    #: Environment the script sees (the package's configuration, KOKPIT_*).
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float = 300.0


@dataclass(frozen=True)
class StepResult:
    exit_status: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def stderr_tail(self) -> str:
        return self.stderr[-STDERR_TAIL:]


class HostError(Exception):
    """The step could not be run at all; the message is for a person and ends up in the
    Machine's HostReachable condition. ``reason`` is that condition's reason."""

    reason = "HostError"


class HostUnreachable(HostError):
    """No connection (refused, timed out, no route, authentication failed)."""

    reason = "Unreachable"


class HostKeyMismatch(HostError):
    """The host's key is not the one pinned in the Machine's Secret. Never accepted: a person
    must check the host and update the Secret."""

    reason = "HostKeyMismatch"


class Executor(Protocol):
    async def run(self, host: Host, step: Step) -> StepResult:
        """Run ``step`` on ``host``; a step that exceeds its timeout is killed and returns a
        failed result. Raises :class:`HostError` when the host cannot be reached."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
