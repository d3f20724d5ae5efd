"""Detached component processes that outlive the command that started them.

``kokpit local up`` returns while etcd, kube-apiserver and the rest keep running, so each is
started in a session of its own with its output appended to a log file, and is remembered by
pid *and* kernel start time: a pid alone may be reused after a crash or a reboot, and stopping
somebody else's process must never happen.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ProcessRef:
    """A process we started: its pid and its start time in clock ticks since boot."""

    pid: int
    start_ticks: int

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start_ticks": self.start_ticks}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessRef:
        return cls(pid=int(data["pid"]), start_ticks=int(data["start_ticks"]))


#: The search path of a component: the system's directories, fixed (the caller's PATH may name
#: a user's own directories first).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def minimal_environment(home: Path | None = None) -> dict[str, str]:
    """The whole environment a component gets: PATH, and HOME when given, nothing inherited.

    Whoever starts components (an operator, ``kokpit local up``) may hold KUBECONFIG, tokens
    or cloud credentials in its environment, and a component needs none of them: everything
    it uses is a flag or a file it is pointed at. HOME is a directory of the component's own
    (its layout's root), so no default (``~/.kube/config``, ``~/.kwok``) is read from the
    user that started it; without one some Go tools fail to find a home at all.
    """
    env = {"PATH": SYSTEM_PATH}
    if home is not None:
        env["HOME"] = str(home)
    return env


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> ProcessRef:
    """Start ``argv`` detached (new session, stdin from /dev/null, output appended to ``log``)
    with ``env``, by default :func:`minimal_environment` (never the caller's)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, fd, 1),
            (os.POSIX_SPAWN_DUP2, fd, 2),
            (os.POSIX_SPAWN_CLOSE, fd),
        ]
        pid = os.posix_spawn(
            argv[0],
            argv,
            env if env is not None else minimal_environment(),
            file_actions=actions,
            setsid=True,
        )
    finally:
        os.close(fd)
    ticks = _start_ticks(pid)
    if ticks is None:  # it died at once; leave a ref that is simply not alive
        return ProcessRef(pid, -1)
    return ProcessRef(pid, ticks)


def alive(ref: ProcessRef) -> bool:
    """True while the very process we started runs (a zombie counts as dead)."""
    _reap(ref.pid)
    return _start_ticks(ref.pid) == ref.start_ticks


def stop(ref: ProcessRef, *, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; returns once the process is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not alive(ref):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(ref.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive(ref):
            time.sleep(0.05)


def tail(log: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (read from the end, logs can be large)."""
    try:
        with log.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, or None if there is no live process with that pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
