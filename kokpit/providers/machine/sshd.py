"""Simulated hosts for the ``ssh`` executor: real OpenSSH ``sshd`` servers on this machine.

The e2e tests log in to them, and ``kokpit demo`` joins one to a business cluster with a real
kubelet: here, not under ``tests/``, so the demo can use them too.

Each host listens on its own loopback address (127.0.10.x; Linux routes all of 127.0.0.0/8 to
``lo``), on a free port, with its own ed25519 host key, so a known_hosts line pins one host and
no other. Each host has its own root directory, which sshd hands to every session as
``KOKPIT_ROOT`` (``SetEnv``): packages install under it, so tests can look at what a step did.

Run as root (as in CI), sshd needs its privilege-separation directory ``/run/sshd``; run as
another user it can only log that user in, which is all the tests need. Stopping a host kills the
listener and every per-connection sshd below it (sshd does not take them down itself on
SIGTERM), so open connections break as they would if the machine went away. Should pytest die
without tearing down, the kernel kills the listeners (``PR_SET_PDEATHSIG``; that follows the
thread that started them, so start hosts from the main thread).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import getpass
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kokpit.providers.machine import Credentials, Host

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
#: The first simulated host listens on 127.0.10.1, the next on 127.0.10.2, and so on.
ADDRESS_PREFIX = "127.0.10."
START_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


@dataclass
class SimulatedHost:
    name: str
    address: str
    port: int
    #: Where the host's packages install: the sessions' ``KOKPIT_ROOT``.
    root: Path
    #: The known_hosts line pinning this host's key (``[address]:port ssh-ed25519 ...``).
    known_hosts: bytes = field(repr=False)
    #: The tests' client key, authorized on every host.
    private_key: bytes = field(repr=False)
    username: str
    config: Path
    log: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def credentials(self) -> Credentials:
        return Credentials(
            username=self.username, private_key=self.private_key, known_hosts=self.known_hosts
        )

    def ssh_secret(
        self, namespace: str, name: str, *, known_hosts: bytes | None = None
    ) -> dict[str, Any]:
        """The Secret a Machine names (``sshSecretRef``) to log in here; ``known_hosts``
        replaces the pinned key (to show a forged one refused)."""
        data = {
            "username": self.username.encode(),
            "privateKey": self.private_key,
            "knownHosts": self.known_hosts if known_hosts is None else known_hosts,
        }
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }

    def host(self) -> Host:
        return Host(
            key=f"hosts/{self.name}",
            address=self.address,
            port=self.port,
            credentials=self.credentials(),
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start sshd and wait until it accepts connections."""
        if self.running:
            return
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"sshd for {self.name} exited: {self.log.read_text()}")
            try:
                socket.create_connection((self.address, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd for {self.name} did not listen within {START_TIMEOUT} s")

    def stop(self) -> None:
        """Stop sshd and every session under it, as if the machine went away."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGSTOP)  # Accepts no more connections meanwhile.
        self.drop_connections()
        self._process.kill()
        self._process.wait()
        self._process = None

    def connections(self) -> int:
        """How many client connections the host has open (one sshd child each)."""
        if self._process is None:
            return 0
        return len(_descendants(self._process.pid, depth=1))

    def freeze(self) -> None:
        """Stop sshd and its sessions where they are (SIGSTOP), as a hung machine would: the
        kernel still accepts connections and data, nothing answers. :meth:`thaw` resumes."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, signum: int) -> None:
        if self._process is None:
            return
        for pid in [self._process.pid, *_descendants(self._process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def drop_connections(self) -> None:
        """Kill the per-connection sshd processes (and their sessions); keep listening."""
        if self._process is None:
            return
        for _ in range(50):
            pids = _descendants(self._process.pid)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        raise RuntimeError(f"sessions of {self.name} survive SIGKILL: {pids}")


def start_hosts(directory: Path, count: int) -> list[SimulatedHost]:
    """Start ``count`` hosts under ``directory``; stop them with :func:`stop_hosts`."""
    if not SSHD.exists():
        raise RuntimeError(f"{SSHD} is missing: `make host-deps` installs openssh-server")
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    client_key = _keygen(directory / "client" / "id_ed25519")
    hosts: list[SimulatedHost] = []
    try:
        for index in range(count):
            hosts.append(_new_host(directory / "hosts", f"host-{index}", index, client_key))
            hosts[-1].start()
    except BaseException:
        stop_hosts(hosts)
        raise
    return hosts


def start_host_at(directory: Path, address: str) -> SimulatedHost:
    """One host listening on ``address`` (for a host whose kubelet needs this machine's
    non-loopback address: a kubelet refuses a loopback node IP); stop it with ``stop()``."""
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    client_key = _keygen(directory / "client" / "id_ed25519")
    host = _new_host(directory / "hosts", "host", 0, client_key, address=address)
    host.start()
    return host


def stop_hosts(hosts: list[SimulatedHost]) -> None:
    for host in hosts:
        host.stop()


def _new_host(
    parent: Path, name: str, index: int, client_key: Path, address: str | None = None
) -> SimulatedHost:
    home = parent / name
    root = home / "root"
    root.mkdir(parents=True)
    address = address or f"{ADDRESS_PREFIX}{index + 1}"
    port = _free_port(address)
    host_key = _keygen(home / "ssh_host_ed25519_key")
    config = home / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress {address}:{port}",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {client_key}.pub",
                "PidFile none",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                # Sessions get the host's own (empty) home: the login shell must not run the
                # dotfiles of the user the tests run as (a ~/.bashrc's `pyenv init` takes a
                # machine-wide lock in every session, and a session killed holding it stalls
                # every later step).
                f'SetEnv "KOKPIT_ROOT={root}" "HOME={home}"',
                "LogLevel ERROR",
                "",
            ]
        )
    )
    public = host_key.with_name(host_key.name + ".pub").read_text().split()
    return SimulatedHost(
        name=name,
        address=address,
        port=port,
        root=root,
        known_hosts=f"[{address}]:{port} {public[0]} {public[1]}\n".encode(),
        private_key=client_key.read_bytes(),
        username=getpass.getuser(),
        config=config,
        log=home / "sshd.log",
    )


def _keygen(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _descendants(pid: int, depth: int | None = None) -> list[int]:
    """The live processes below ``pid`` (``depth`` levels down, or all), from /proc (sshd puts
    each connection in its own session, so a process group does not hold them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces; state and parent follow it.
        state, ppid = text.rsplit(")", 1)[1].split()[:2]
        if state != "Z":  # Killed, not yet reaped (its parent may be stopped).
            children.setdefault(int(ppid), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [(pid, 0)]
    while todo:
        parent, level = todo.pop()
        if depth is not None and level >= depth:
            continue
        for child in children.get(parent, []):
            found.append(child)
            todo.append((child, level + 1))
    return found
