"""The ``ssh`` executor: runs a step's script on the real host over SSH (asyncssh).

Invariants:

* The host key is pinned by the Machine's SSH Secret (``known_hosts``) and never accepted on
  first use: a host presenting another key, or a Secret pinning none, is
  :class:`~kokpit.providers.machine.HostKeyMismatch`, and nothing runs.
* Nothing of the operator's own SSH setup is used (no ``~/.ssh/config``, keys, agent,
  known_hosts, CA bundle or Kerberos): a step logs in with the Secret's key and nothing else.
* A step runs as ``/bin/sh -eu`` reading its script on stdin. Its environment is ``export``
  lines prepended to the script, so it reaches the script whatever sshd's ``AcceptEnv`` says.
  The script itself runs with stdin from ``/dev/null``: a command that reads stdin must not
  swallow the rest of the script.
* ``KOKPIT_ROOT`` is the directory packages install under: empty (``/``) on a real host. The
  host's own environment wins (test hosts set it with sshd ``SetEnv``); a ``KOKPIT_ROOT`` in
  the step's env is only the default when the host sets none. It is always exported, so
  scripts can use it under ``-u``.
* A step that exceeds its timeout is ended on the host, by timeout(1) (TERM to the step's
  process group, KILL 5 s later), and returns exit status 124. Not by the SSH "signal"
  request: OpenSSH honours it only under privilege separation, which it turns off for root
  logins; nor by closing the channel: sshd then leaves the processes running. So a host needs
  timeout(1) (coreutils, or busybox >= 1.30). Should the step outlive even that, the executor
  stops waiting shortly after and returns 124 all the same.
* One connection per (address, port, user, credentials) is reused by all steps; it is opened
  under a lock, so concurrent steps never race to open it. A broken connection is dropped and
  opened again once, on the next step. Sessions are bounded overall and per connection
  (OpenSSH's ``MaxSessions`` refuses more than 10 sessions on one connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncssh
from asyncssh.public_key import get_default_certificate_algs, get_default_public_key_algs

from kokpit.providers.machine import (
    Credentials,
    Host,
    HostError,
    HostKeyMismatch,
    HostUnreachable,
    Step,
    StepResult,
)

#: Exit status of a step killed for exceeding its timeout (as timeout(1) reports it).
TIMEOUT_STATUS = 124
#: How long a timed-out step has to exit on SIGTERM before it gets SIGKILL.
KILL_GRACE = 5
#: How much longer than timeout(1) on the host the executor waits for a step to end.
BACKSTOP = 10.0
#: How long a session may take to close once its step has ended (or been given up on).
CLOSE_TIMEOUT = 5.0
#: OpenSSH's default ``MaxSessions``: more sessions on one connection are refused.
SESSIONS_PER_CONNECTION = 10
#: How often opening a session the host refuses is tried (see :meth:`SSHExecutor._start`).
OPEN_ATTEMPTS = 5

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ConnectionKey = tuple[str, int, str, str]


@dataclass
class _Connection:
    """A cached connection and what guards it."""

    sessions: asyncio.Semaphore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: asyncssh.SSHClientConnection | None = None


class SSHExecutor:
    """Runs steps on hosts over SSH; see the module docstring for the guarantees."""

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        max_sessions: int = 64,
        sessions_per_connection: int = SESSIONS_PER_CONNECTION,
        keepalive_interval: float = 30.0,
    ) -> None:
        """``connect_timeout`` bounds TCP connect, key exchange and login together.
        ``max_sessions`` bounds the steps running at once over all hosts (each is a channel
        and a remote process); ``sessions_per_connection`` those on one host. Keepalives
        detect a host that vanished without closing the connection (after 3 missed)."""
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        self.sessions_per_connection = sessions_per_connection
        self._sessions = asyncio.Semaphore(max_sessions)
        self._connections: dict[_ConnectionKey, _Connection] = {}

    async def run(self, host: Host, step: Step) -> StepResult:
        credentials = _require_credentials(host)
        timeout = max(1, math.ceil(step.timeout_seconds))
        command = f"timeout -k {KILL_GRACE} {timeout} /bin/sh -eu"
        script = prelude(step.env) + "{\n" + step.script + "\n} </dev/null\n"
        cached = self._connections.setdefault(
            _key(host, credentials), _Connection(asyncio.Semaphore(self.sessions_per_connection))
        )
        async with cached.sessions, self._sessions:
            conn, process = await self._start(host, credentials, cached, command, script)
            try:
                return await self._wait(host, cached, conn, process, timeout)
            finally:
                process.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait_closed(), CLOSE_TIMEOUT)

    async def close(self) -> None:
        connections = [c.conn for c in self._connections.values() if c.conn is not None]
        self._connections.clear()
        for conn in connections:
            conn.close()
        await asyncio.gather(*(conn.wait_closed() for conn in connections))

    async def _start(
        self, host: Host, credentials: Credentials, cached: _Connection, command: str, script: str
    ) -> tuple[asyncssh.SSHClientConnection, asyncssh.SSHClientProcess[str]]:
        """Open a session running the script, on the cached connection; if that connection
        turns out to be broken, on a new one (once)."""
        reconnected = False
        for attempt in itertools.count(1):
            conn = await self._connection(host, credentials, cached)
            try:
                process = await conn.create_process(
                    command, input=script, encoding="utf-8", errors="replace"
                )
                return conn, process
            except (asyncssh.Error, OSError) as exc:
                if conn.is_closed():
                    await self._drop(cached, conn)
                    if reconnected:
                        raise HostUnreachable(f"{_where(host)}: connection lost: {exc}") from None
                    reconnected = True
                elif isinstance(exc, asyncssh.ChannelOpenError) and attempt < OPEN_ATTEMPTS:
                    # sshd frees a closed session's slot on its next turn only, so a session
                    # opened just after another closed may find all MaxSessions slots taken.
                    await asyncio.sleep(0.05 * attempt)
                else:
                    raise HostError(f"{_where(host)}: the host refused a session: {exc}") from None
        raise AssertionError("unreachable")

    async def _wait(
        self,
        host: Host,
        cached: _Connection,
        conn: asyncssh.SSHClientConnection,
        process: asyncssh.SSHClientProcess[str],
        limit: int,
    ) -> StepResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            done = await process.wait(timeout=limit + KILL_GRACE + BACKSTOP)
        except asyncssh.TimeoutError as exc:
            # timeout(1) did not end it: ask sshd (works for non-root logins), then give up.
            process.send_signal("KILL")
            return _timed_out(limit, exc.stdout, exc.stderr)
        except (asyncssh.Error, OSError) as exc:
            await self._drop(cached, conn)
            raise HostUnreachable(
                f"{_where(host)}: connection lost during the step: {exc}"
            ) from None
        status = done.returncode
        if status is None:  # The channel closed without an exit status: the connection broke.
            await self._drop(cached, conn)
            raise HostUnreachable(f"{_where(host)}: connection lost during the step")
        if status < 0:  # Killed by a signal: report it as a shell would.
            status = 128 - status
        if status in (TIMEOUT_STATUS, 128 + 9) and loop.time() - started >= limit:
            return _timed_out(limit, done.stdout, done.stderr)
        return StepResult(status, str(done.stdout or ""), str(done.stderr or ""))

    async def _connection(
        self, host: Host, credentials: Credentials, cached: _Connection
    ) -> asyncssh.SSHClientConnection:
        async with cached.lock:
            if cached.conn is not None and cached.conn.is_closed():
                cached.conn = None
            if cached.conn is None:
                cached.conn = await self._connect(host, credentials)
            return cached.conn

    async def _drop(self, cached: _Connection, conn: asyncssh.SSHClientConnection) -> None:
        async with cached.lock:
            if cached.conn is conn:
                cached.conn = None
        conn.close()
        await conn.wait_closed()

    async def _connect(self, host: Host, credentials: Credentials) -> asyncssh.SSHClientConnection:
        where = _where(host)
        try:
            known_hosts = asyncssh.import_known_hosts(credentials.known_hosts.decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise HostKeyMismatch(
                f"{where}: the known_hosts in the Machine's SSH Secret cannot be read: {exc}"
            ) from None
        try:
            client_key = asyncssh.import_private_key(credentials.private_key)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HostUnreachable(
                f"{where}: the private key in the Machine's SSH Secret cannot be read: {exc}"
            ) from None
        try:
            return await asyncssh.connect(
                host.address,
                host.port,
                username=credentials.username,
                known_hosts=known_hosts,
                server_host_key_algs=_host_key_algs(known_hosts, host),
                client_keys=[client_key],
                config=None,
                agent_path=None,
                x509_trusted_certs=None,
                gss_host=None,
                preferred_auth="publickey",
                connect_timeout=self.connect_timeout,
                keepalive_interval=self.keepalive_interval,
                keepalive_count_max=3,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyMismatch(
                f"{where}: the host key does not match the key pinned in the Machine's SSH"
                f" Secret ({exc}); check the host, then update the Secret's known_hosts"
            ) from None
        except asyncssh.PermissionDenied as exc:
            raise HostUnreachable(
                f"{where}: authentication as {credentials.username!r} failed ({exc}): is the"
                " Secret's key in the host's authorized_keys?"
            ) from None
        except TimeoutError:
            raise HostUnreachable(
                f"{where}: no connection within {self.connect_timeout:g} s"
            ) from None
        except (asyncssh.Error, OSError) as exc:
            raise HostUnreachable(f"{where}: {exc.__class__.__name__}: {exc}") from None


def prelude(env: Mapping[str, str]) -> str:
    """The lines that give a step its environment (see the module docstring)."""
    root = shlex.quote(env.get("KOKPIT_ROOT", ""))
    lines = [f'[ -n "${{KOKPIT_ROOT:-}}" ] || KOKPIT_ROOT={root}', "export KOKPIT_ROOT"]
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
        if name != "KOKPIT_ROOT":
            lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def _timed_out(limit: int, stdout: str | bytes | None, stderr: str | bytes | None) -> StepResult:
    killed = f"\n... killed after {limit} s"
    return StepResult(TIMEOUT_STATUS, str(stdout or ""), str(stderr or "") + killed)


def _host_key_algs(known_hosts: asyncssh.SSHKnownHosts, host: Host) -> list[str]:
    """The pinned keys' algorithms first, then all others. asyncssh offers only the pinned ones,
    so a host whose key changed type hangs up (no common algorithm) instead of showing its key:
    an unclear "connection reset" rather than a clear :class:`HostKeyMismatch`."""
    port = None if host.port == 22 else host.port
    pinned = asyncssh.match_known_hosts(known_hosts, host.address, host.address, port)[0]
    offered = [alg for key in pinned for alg in key.sig_algorithms]
    offered += get_default_certificate_algs() + get_default_public_key_algs()
    return [alg.decode() for alg in dict.fromkeys(offered)]


def _require_credentials(host: Host) -> Credentials:
    where = _where(host)
    if host.credentials is None:
        raise HostUnreachable(f"{where}: the Machine has no SSH credentials")
    if not host.credentials.known_hosts.strip():
        # Refused anyway (nothing verifies), but this says why.
        raise HostKeyMismatch(f"{where}: the Machine's SSH Secret pins no host key")
    return host.credentials


def _key(host: Host, credentials: Credentials) -> _ConnectionKey:
    digest = hashlib.sha256(credentials.private_key + b"\0" + credentials.known_hosts)
    return (host.address, host.port, credentials.username, digest.hexdigest())


def _where(host: Host) -> str:
    return f"{host.address}:{host.port}"
