import os
import shutil
import time
from pathlib import Path

import pytest

from kokpit.local import process
from kokpit.local.components import Component, Health, Layout
from kokpit.local.supervisor import Supervisor


def wait_dead(ref: process.ProcessRef, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive(ref):
            return True
        time.sleep(0.02)
    return False


def test_spawn_detaches_and_logs(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "echo.log"
    sh = shutil.which("sh")
    assert sh is not None
    ref = process.spawn([sh, "-c", "echo hello; echo oops >&2; exec sleep 30"], log)
    try:
        assert process.alive(ref)
        assert os.getsid(ref.pid) == ref.pid, "runs in a session of its own"
        deadline = time.monotonic() + 5
        while "oops" not in process.tail(log) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.tail(log).splitlines() == ["hello", "oops"]
    finally:
        process.stop(ref)
    assert not process.alive(ref)


def test_a_process_that_exits_is_not_alive(tmp_path: Path) -> None:
    ref = process.spawn(["/bin/sh", "-c", "exit 3"], tmp_path / "x.log")
    assert wait_dead(ref)


def test_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    ref = process.spawn(["/bin/sleep", "30"], tmp_path / "x.log")
    try:
        impostor = process.ProcessRef(ref.pid, ref.start_ticks + 1)
        assert not process.alive(impostor)
        process.stop(impostor)  # must not touch the real process
        assert process.alive(ref)
    finally:
        process.stop(ref)


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    ref = process.spawn(["/bin/sh", "-c", "trap '' TERM; sleep 30"], tmp_path / "x.log")
    time.sleep(0.2)
    started = time.monotonic()
    process.stop(ref, timeout=0.5)
    assert not process.alive(ref)
    assert time.monotonic() - started < 5


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert process.tail(log, 3).splitlines() == ["line 99997", "line 99998", "line 99999"]
    assert process.tail(tmp_path / "absent.log") == ""


def environ_of(pid: int) -> dict[str, str]:
    """The environment ``pid`` runs with (read as /proc shows it: empty for the moment the
    process is still being exec'd, so read until it is there)."""
    deadline = time.monotonic() + 5
    while not (raw := Path(f"/proc/{pid}/environ").read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if item)


def test_a_component_gets_a_minimal_environment_not_its_starters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOKPIT_TEST_SECRET", "xyz")
    monkeypatch.setenv("KUBECONFIG", "/home/admin/.kube/config")
    layout = Layout(tmp_path / "cp")
    ref = Supervisor(layout).start(Component("sleeper", ["/bin/sleep", "30"], Health("")))
    try:
        assert environ_of(ref.pid) == {"PATH": process.SYSTEM_PATH, "HOME": str(layout.root)}
    finally:
        process.stop(ref)
    ref = process.spawn(["/bin/sleep", "30"], tmp_path / "x.log")
    try:
        assert environ_of(ref.pid) == {"PATH": process.SYSTEM_PATH}
    finally:
        process.stop(ref)
