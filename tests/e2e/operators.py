"""Operators under test as their own OS processes, so a test can kill one as a crash would.

Cancelling an operator's asyncio task inside the test process is not a crash: its ``finally``
blocks and clean-up still run and may write status. A real crash (OOM kill, node loss, kubelet
eviction) leaves nothing of the process but what it already wrote. :class:`OperatorProcess`
runs ``python -m kokpit operator <which> ...`` with a kubeconfig of its own (a service account's
for an operator whose RBAC the tests hold it to), logs to a file of its own, and
:meth:`OperatorProcess.kill` sends SIGKILL to that one process: nothing else (the control
planes and host steps it started live on, as they would).

This is the template for every operator's crash tests:

1. Start the operator in a fixture through :func:`operator_process`, which stops it however
   the test ends (examples: ``machine_operator`` in
   ``tests/e2e/controllers/test_machine_operator.py``, ``cluster_operator`` beside it).
2. Wait for the risky moment by observing real state (a marker a host step writes, a component
   process starting, ``status`` saying a step is under way); never by sleeping.
3. :meth:`~OperatorProcess.kill`, then assert that the intent is in the API server (what the
   operator recorded before the step).
4. :meth:`~OperatorProcess.start` a fresh process, wait for convergence, and assert from what
   the steps themselves left (timestamps of each run): no step ran concurrently with itself,
   the interrupted step ran once or twice and never zero times, the others exactly once, and
   the final state is right.

Waits go through :meth:`~OperatorProcess.wait`, whose failure message carries the tail of the
operator's log, so a failed run says what the operator was doing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

import aiohttp

from kokpit.local.process import tail
from kokpit.runtime import ClientConfig

T = TypeVar("T")
#: The operators ``kokpit operator`` runs (a new operator adds its name here).
Which = Literal["machine", "cluster", "remediation", "guard", "probe", "rollout"]

#: How long a fresh process may take to list its informers and say it is ready.
READY_TIMEOUT = 60.0
#: How long :meth:`OperatorProcess.stop` lets the process end on SIGTERM before SIGKILL.
STOP_GRACE = 10.0
LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


class OperatorProcess:
    """``kokpit operator <which>`` as a child process that a test kills and starts again.

    Every start appends to the same log file, after a line saying which start it is, so the
    log reads as the operator's whole life across crashes.
    """

    def __init__(self, which: Which, kubeconfig: Path, log: Path, args: Sequence[str] = ()) -> None:
        self.which = which
        self.kubeconfig = kubeconfig
        self.log = log
        self.args = list(args)
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._health_port = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def health_port(self) -> int:
        """Where the running process serves ``/healthz``, ``/readyz`` and ``/metrics``."""
        return self._health_port

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def start(self) -> None:
        """Start a fresh process and wait until its informers are synced (``/readyz``)."""
        self.spawn()
        await self.wait(self._ready, f"the {self.which} operator to be ready", READY_TIMEOUT)

    def spawn(self) -> None:
        """Start a fresh process (:meth:`start` also waits until it is ready)."""
        if self.running:
            raise RuntimeError(f"the {self.which} operator is running already (pid {self.pid})")
        self.starts += 1
        self._health_port = _free_port()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            log.write(f"--- start {self.starts} of the {self.which} operator ---\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "kokpit", "operator", self.which),
                    *("--kubeconfig", str(self.kubeconfig)),
                    *("--health-port", str(self._health_port)),
                    *self.args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Should pytest die without its teardown, the operator goes with it.
                preexec_fn=_die_with_parent,
            )

    def kill(self) -> None:
        """SIGKILL the operator process, and only it, as a crash would; then reap it."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGKILL)
        self._process.wait()
        self._log_line(f"--- killed (SIGKILL) start {self.starts} ---")
        self._process = None

    def terminate(self, within: float) -> int:
        """SIGTERM, as the kubelet stops a pod's container; the exit code once it ends (fails
        if it is still running after ``within`` seconds)."""
        if self._process is None:
            raise RuntimeError(f"the {self.which} operator is not running")
        self._process.terminate()
        try:
            code = self._process.wait(within)
        except subprocess.TimeoutExpired:
            raise AssertionError(self.explain(f"still running {within} s after SIGTERM")) from None
        self._process = None
        return code

    def stop(self) -> None:
        """End the process for good (fixture teardown): SIGTERM, then SIGKILL if it lingers."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    async def wait(self, check: Callable[[], Awaitable[T | None]], what: str, within: float) -> T:
        """Poll ``check`` until it returns something truthy; fail with the operator's log."""
        deadline = time.monotonic() + within
        last: T | None = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(self.explain(f"the {self.which} operator exited"))
            last = await check()
            if last:
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(
            self.explain(f"timed out after {within:.0f} s waiting for {what}; last: {last!r}")
        )

    def explain(self, message: str) -> str:
        """``message`` followed by the tail of the operator's log (for assertion messages)."""
        return (
            f"{message}\n--- the {self.which} operator's log ({self.log}), last lines ---\n"
            f"{tail(self.log, LOG_TAIL_LINES)}"
        )

    async def _ready(self) -> bool:
        url = f"http://127.0.0.1:{self._health_port}/readyz"
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response,
            ):
                return response.status == 200
        return False

    def _log_line(self, line: str) -> None:
        with self.log.open("a") as log:
            log.write(line + "\n")


@contextlib.contextmanager
def operator_process(
    which: Which, kubeconfig: Path, log: Path, args: Sequence[str] = ()
) -> Iterator[OperatorProcess]:
    """An :class:`OperatorProcess` that is stopped however the test ends (start it yourself:
    ``await op.start()``; a fixture wraps this with ``with``)."""
    op = OperatorProcess(which, kubeconfig, log, args)
    try:
        yield op
    finally:
        op.stop()


def write_kubeconfig(config: ClientConfig, path: Path) -> Path:
    """A kubeconfig file for ``config`` (a service account's token, or a client certificate),
    for an operator process to load; written as JSON, which kubeconfig readers accept."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    cluster: dict[str, str] = {"server": config.server}
    if config.ca_data:
        cluster["certificate-authority-data"] = b64(config.ca_data)
    user: dict[str, str] = {}
    if config.token:
        user["token"] = config.token
    if config.cert_data and config.key_data:
        user |= {
            "client-certificate-data": b64(config.cert_data),
            "client-key-data": b64(config.key_data),
        }
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "operator", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "operator"}}],
        "current-context": "test",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    return path


Interval = tuple[float, float]


def overlapping(runs: Sequence[Interval]) -> list[tuple[Interval, Interval]]:
    """The pairs of ``(start, end)`` intervals that overlap: none, for runs one at a time.
    Intervals are closed: two that share an instant overlap (for runs seen by polling, both
    were seen alive by the same look)."""
    ordered = sorted(runs)
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :] if b[0] <= a[1]]


def api_seconds(timestamp: str) -> float:
    """An API timestamp (``2026-01-02T03:04:05Z``, whole seconds) as seconds since the epoch:
    what an operator recorded, to compare with when a step really started."""
    parsed = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return parsed.timestamp()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
