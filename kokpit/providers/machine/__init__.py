"""Where a Machine's package steps run.

The Machine-Operator decides *which* step of *which* package runs next (from the check steps
and the desired MachinePackageVersion); an :class:`Executor` runs one step on one host and
says how it ended. Two executors: ``ssh`` runs the step's script on the real host (host key
pinned, never trusted on first use), ``sim`` simulates hosts in process for scale tests.

A step never assumes what an earlier, possibly interrupted step did: the operator runs the
package's ``check`` again first, so executors need no memory of their own.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

#: What a step does: a package's steps, and the remediation's ``restart`` (a package's) and
#: ``reboot`` (the host's; see :mod:`kokpit.providers.repair.executor`).
Action = Literal["check", "install", "upgrade", "remove", "verify", "restart", "reboot"]

#: How much of a failed step's stderr reaches the Machine's status (its tail).
STDERR_TAIL = 2048
#: How much of each of a step's output streams an executor keeps (the end): a host that prints
#: without end must not exhaust the operator's memory.
OUTPUT_TAIL = 64 * 1024


#: The keys of a Machine's SSH Secret, all required.
SECRET_KEYS = ("username", "privateKey", "knownHosts")
#: A user name: POSIX's portable characters (no leading '-'), and '@' for directory users.
_USERNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class Credentials:
    """How to log in to a host: from the Machine's SSH Secret."""

    username: str
    private_key: bytes = field(repr=False)
    #: known_hosts lines pinning the host key; a host presenting another key is refused.
    known_hosts: bytes = field(repr=False)

    @classmethod
    def from_secret_data(cls, data: Mapping[str, Any], *, secret: str) -> Credentials:
        """The credentials in a Secret's ``data`` (base64 values), or
        :class:`InvalidCredentials` naming the Secret and the bad keys, never their content.

        Anyone who may write the Secret may put anything in it: a value that is not base64, a
        user name that is not UTF-8 or holds a newline. Each is a clear condition on the
        Machine, not an exception in the operator."""
        missing = [key for key in SECRET_KEYS if not data.get(key)]
        if missing:
            raise InvalidCredentials(f"SSH Secret {secret} lacks {', '.join(missing)}")
        decoded: dict[str, bytes] = {}
        for key in SECRET_KEYS:
            value = data[key]
            try:
                decoded[key] = base64.b64decode(value, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise InvalidCredentials(f"SSH Secret {secret}: {key} is not base64") from None
        for key in ("username", "knownHosts"):
            if not _utf8(decoded[key]):
                raise InvalidCredentials(f"SSH Secret {secret}: {key} is not UTF-8 text")
        username = decoded["username"].decode("utf-8")
        if not _USERNAME.fullmatch(username):
            raise InvalidCredentials(
                f"SSH Secret {secret}: username is not a user name (at most 64 letters, digits"
                " and '._@-', not starting with '.', '@' or '-')"
            )
        return cls(username, decoded["privateKey"], decoded["knownHosts"])


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


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
    """How a step ended; ``stdout`` and ``stderr`` are at most their last
    :data:`OUTPUT_TAIL` characters."""

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


class InvalidCredentials(HostError):
    """The Machine's SSH Secret cannot be used (a key missing, not base64, not text). The
    message names the Secret and the key, never the content."""

    reason = "InvalidSecret"


class HostKeyMismatch(HostError):
    """The host's key is not the one pinned in the Machine's Secret. Never accepted: a person
    must check the host and update the Secret."""

    reason = "HostKeyMismatch"


class Executor(Protocol):
    async def run(self, host: Host, step: Step) -> StepResult:
        """Run ``step`` on ``host``; a step that exceeds its timeout is killed and returns a
        failed result. Raises :class:`HostError` when the host cannot be reached."""
        ...

    async def forget(self, machine: str) -> None:
        """Close the connections opened for the Machine ``machine`` (its :attr:`Host.key`):
        the Machine was deleted, or its SSH Secret changed (a re-keyed host)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
