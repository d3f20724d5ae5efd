"""The ``ssh`` executor: runs a step's script on the real host over SSH (asyncssh).

Invariants:

* The host key is pinned by the Machine's SSH Secret (``known_hosts``) and never accepted on
  first use: a host presenting another key, or a Secret pinning none, is
  :class:`~kokpit.providers.machine.HostKeyMismatch`, and nothing runs.
* Nothing of the operator's own SSH setup is used (no ``~/.ssh/config``, keys, agent,
  known_hosts, CA bundle or Kerberos): a step logs in with the Secret's key and nothing else.
* A step runs as ``/bin/sh -eu`` reading its script on stdin. Its environment is ``export``
  lines prepended to the script, each value quoted, so it reaches the script as data whatever
  it holds and whatever sshd's ``AcceptEnv`` says. The script itself runs with stdin from
  ``/dev/null``: a command that reads stdin must not swallow the rest of the script.
* Steps of one package never overlap on a host: the shell runs under ``flock`` on
  ``$KOKPIT_ROOT/var/lib/kokpit/locks/<package>.lock``. When the operator dies or loses the
  connection, sshd leaves the step running; the restarted operator's rerun waits for it (and
  says so on stderr) instead of running beside it. The wait counts against the step's timeout.
  flock(1) holds the lock, not the script (``flock -o``), so a daemon the script starts does
  not keep it. A host needs flock(1) (util-linux).
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
* Only the last :data:`~kokpit.providers.machine.OUTPUT_TAIL` characters of stdout and stderr
  are kept, as they are read: a host printing without end costs bounded memory.
* A host cannot hold the executor for longer than it was given: connecting (TCP, key exchange,
  login) and opening a session are each bounded by ``connect_timeout`` (a connection on which
  a session does not open in time is dropped as hung), the step by its timeout, closing by
  :data:`CLOSE_TIMEOUT` (then the connection is aborted).
* One connection per (address, port, user, credentials) is reused by all steps; it is opened
  under a lock, so concurrent steps never race to open it. A broken connection is dropped and
  opened again once, on the next step. Sessions are bounded overall and per connection
  (OpenSSH's ``MaxSessions`` refuses more than 10 sessions on one connection), so a slow or hung
  host holds at most its own share and other hosts' steps go on.
* Connections are remembered per Machine (:attr:`Host.key`): when a Machine's credentials change
  (its Secret re-pins a re-keyed host) the connection opened with the old ones is closed, and
  :meth:`SSHExecutor.forget` closes a deleted Machine's.
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
    OUTPUT_TAIL,
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
#: How much of a step's output is read at a time.
READ_CHUNK = 64 * 1024
#: Where the per-package locks are, under ``$KOKPIT_ROOT``.
LOCKS = "/var/lib/kokpit/locks"

#: The remote command's shell, before the step's own: takes the per-package lock, waiting for
#: (and saying so) a run that holds it, then runs ``/bin/sh -eu`` on the script (stdin). Its
#: arguments are the default ``KOKPIT_ROOT`` and the lock's name. Constant: no value of a
#: resource is part of it.
_LOCKED_SHELL = f"""
root=${{KOKPIT_ROOT:-$1}}
lock="$root{LOCKS}/$2.lock"
mkdir -p -- "$root{LOCKS}"
if ! flock -n "$lock" true; then
  echo "kokpit: waiting for another run of this package's steps to end (it holds $lock)" >&2
fi
exec flock -o "$lock" /bin/sh -eu
"""
_LOCK_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ConnectionKey = tuple[str, int, str, str]


@dataclass
class _Connection:
    """A cached connection and what guards it."""

    sessions: asyncio.Semaphore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: asyncssh.SSHClientConnection | None = None
    #: Released (its Machine forgotten or re-keyed): a connection opened late is closed.
    released: bool = False


class _Tail:
    """The last ``keep`` characters of a stream, kept while it is read."""

    def __init__(self, keep: int = OUTPUT_TAIL) -> None:
        self.keep = keep
        self.text = ""

    async def read(self, reader: asyncssh.SSHReader[str]) -> None:
        while chunk := await reader.read(READ_CHUNK):
            self.text = (self.text + chunk)[-self.keep :]


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
        #: The connection each Machine used last.
        self._machines: dict[str, _ConnectionKey] = {}

    async def run(self, host: Host, step: Step) -> StepResult:
        credentials = _require_credentials(host)
        timeout = max(1, math.ceil(step.timeout_seconds))
        command = " ".join(
            [
                f"timeout -k {KILL_GRACE} {timeout} /bin/sh -euc",
                shlex.quote(_LOCKED_SHELL),
                "kokpit-step",
                shlex.quote(step.env.get("KOKPIT_ROOT", "")),
                shlex.quote(lock_name(step.package)),
            ]
        )
        script = prelude(step.env) + "{\n" + step.script + "\n} </dev/null\n"
        key = _key(host, credentials)
        previous = self._machines.get(host.key)
        self._machines[host.key] = key
        if previous is not None and previous != key:  # The Machine's Secret changed.
            await self._release(previous)
        cached = self._connections.setdefault(
            key, _Connection(asyncio.Semaphore(self.sessions_per_connection))
        )
        async with cached.sessions, self._sessions:
            conn, process = await self._start(host, credentials, cached, command, script)
            try:
                return await self._wait(host, cached, conn, process, timeout)
            finally:
                process.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait_closed(), CLOSE_TIMEOUT)

    async def forget(self, machine: str) -> None:
        key = self._machines.pop(machine, None)
        if key is not None:
            await self._release(key)

    async def close(self) -> None:
        cached = list(self._connections.values())
        self._connections.clear()
        self._machines.clear()
        for c in cached:
            c.released = True
        await asyncio.gather(*(_shut(c.conn) for c in cached if c.conn is not None))

    async def _release(self, key: _ConnectionKey) -> None:
        """Close the connection ``key`` unless another Machine still uses it."""
        if key in self._machines.values():
            return
        cached = self._connections.pop(key, None)
        if cached is not None:
            cached.released = True
            if cached.conn is not None:
                await _shut(cached.conn)

    async def _start(
        self, host: Host, credentials: Credentials, cached: _Connection, command: str, script: str
    ) -> tuple[asyncssh.SSHClientConnection, asyncssh.SSHClientProcess[str]]:
        """Open a session running the script, on the cached connection; if that connection
        turns out to be broken, on a new one (once)."""
        reconnected = False
        for attempt in itertools.count(1):
            conn = await self._connection(host, credentials, cached)
            try:
                process = await asyncio.wait_for(
                    conn.create_process(command, input=script, encoding="utf-8", errors="replace"),
                    self.connect_timeout,
                )
                return conn, process
            except TimeoutError:
                await self._drop(cached, conn)
                raise HostUnreachable(
                    f"{_where(host)}: the host did not open a session within"
                    f" {self.connect_timeout:g} s; the connection is dropped as hung"
                ) from None
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
        stdout, stderr = _Tail(), _Tail()
        readers = [
            asyncio.create_task(stdout.read(process.stdout)),
            asyncio.create_task(stderr.read(process.stderr)),
        ]
        try:
            async with asyncio.timeout(limit + KILL_GRACE + BACKSTOP):
                await asyncio.gather(*readers)
                await process.wait_closed()
        except TimeoutError:
            # timeout(1) did not end it: ask sshd (works for non-root logins), then give up.
            process.send_signal("KILL")
            return _timed_out(limit, stdout.text, stderr.text)
        except (asyncssh.Error, OSError) as exc:
            await self._drop(cached, conn)
            raise HostUnreachable(
                f"{_where(host)}: connection lost during the step: {exc}"
            ) from None
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        status = process.returncode
        if status is None:  # The channel closed without an exit status: the connection broke.
            await self._drop(cached, conn)
            raise HostUnreachable(f"{_where(host)}: connection lost during the step")
        if status < 0:  # Killed by a signal: report it as a shell would.
            status = 128 - status
        if status in (TIMEOUT_STATUS, 128 + 9) and loop.time() - started >= limit:
            return _timed_out(limit, stdout.text, stderr.text)
        return StepResult(status, stdout.text, stderr.text)

    async def _connection(
        self, host: Host, credentials: Credentials, cached: _Connection
    ) -> asyncssh.SSHClientConnection:
        async with cached.lock:
            if cached.conn is not None and cached.conn.is_closed():
                cached.conn = None
            if cached.conn is None:
                conn = await self._connect(host, credentials)
                if cached.released:  # Forgotten while connecting.
                    await _shut(conn)
                    raise HostUnreachable(f"{_where(host)}: the Machine's connection was closed")
                cached.conn = conn
            return cached.conn

    async def _drop(self, cached: _Connection, conn: asyncssh.SSHClientConnection) -> None:
        async with cached.lock:
            if cached.conn is conn:
                cached.conn = None
        await _shut(conn)

    async def _connect(self, host: Host, credentials: Credentials) -> asyncssh.SSHClientConnection:
        where = _where(host)
        try:
            known_hosts = asyncssh.import_known_hosts(credentials.known_hosts.decode())
        except (ValueError, UnicodeDecodeError):
            # Not the parser's message: it quotes the Secret's content.
            raise HostKeyMismatch(
                f"{where}: the knownHosts in the Machine's SSH Secret are not known_hosts lines"
            ) from None
        try:
            client_key = asyncssh.import_private_key(credentials.private_key)
        except (ValueError, UnicodeDecodeError):
            raise HostUnreachable(
                f"{where}: the privateKey in the Machine's SSH Secret is not a private key"
                " (OpenSSH or PEM, without passphrase)"
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


def lock_name(package: str) -> str:
    """The name of ``package``'s lock file on the host: the package's name, when it is one
    (the API server makes sure), else a digest of it, so that no value names a file."""
    if _LOCK_NAME.fullmatch(package):
        return package
    return "sha256-" + hashlib.sha256(package.encode()).hexdigest()


async def _shut(conn: asyncssh.SSHClientConnection) -> None:
    """Close ``conn``; abort it if the host does not let it close in time."""
    conn.close()
    try:
        await asyncio.wait_for(conn.wait_closed(), CLOSE_TIMEOUT)
    except TimeoutError:
        conn.abort()


def _timed_out(limit: int, stdout: str, stderr: str) -> StepResult:
    killed = f"\n... killed after {limit} s"
    return StepResult(TIMEOUT_STATUS, stdout, stderr[-(OUTPUT_TAIL - len(killed)) :] + killed)


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
