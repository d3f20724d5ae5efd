"""The ``ssh`` executor against real OpenSSH servers on loopback (:mod:`tests.e2e.hosts`).

No Kubernetes here: only sshd. The hosts are shared by the session, so each test writes files
under a name of its own and starts again any host it stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import resource
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from kokpit.providers.machine import (
    OUTPUT_TAIL,
    Host,
    HostKeyMismatch,
    HostUnreachable,
    Step,
    packages,
)
from kokpit.providers.machine.ssh import KILL_GRACE, SSHExecutor, prelude
from kokpit.providers.machine.sshd import SimulatedHost


@pytest.fixture
async def executor() -> AsyncIterator[SSHExecutor]:
    ssh = SSHExecutor()
    try:
        yield ssh
    finally:
        await ssh.close()


def step(
    script: str, env: dict[str, str] | None = None, timeout: float = 30.0, package: str = "demo"
) -> Step:
    return Step(package, "install", "1.0", script, env or {}, timeout)


def with_credentials(
    host: SimulatedHost, *, known_hosts: bytes | None = None, private_key: bytes | None = None
) -> Host:
    credentials = host.credentials()
    credentials = dataclasses.replace(
        credentials,
        known_hosts=credentials.known_hosts if known_hosts is None else known_hosts,
        private_key=credentials.private_key if private_key is None else private_key,
    )
    return dataclasses.replace(host.host(), credentials=credentials)


async def test_step_runs_on_its_host_with_env(
    executor: SSHExecutor, ssh_hosts: list[SimulatedHost]
) -> None:
    target, *others = ssh_hosts
    name = f"greeting-{secrets.token_hex(4)}"
    tricky = """it's "quoted", $HOME `id` \\ and spaced"""
    script = f"""
        mkdir -p "$KOKPIT_ROOT/etc"
        printf '%s\\n' "$GREETING" > "$KOKPIT_ROOT/etc/{name}"
        cat  # reads stdin, which must not be the rest of the script
        echo "root=$KOKPIT_ROOT"
        printf '%s\\n' "$TRICKY"
    """
    # A KOKPIT_ROOT in the step's env does not override the host's own (sshd SetEnv).
    env = {"GREETING": "hello world", "TRICKY": tricky, "KOKPIT_ROOT": "/elsewhere"}
    result = await executor.run(target.host(), step(script, env))
    assert result.ok, result
    assert result.stdout == f"root={target.root}\n{tricky}\n"
    assert (target.root / "etc" / name).read_text() == "hello world\n"
    assert not any((other.root / "etc" / name).exists() for other in others)


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "[]"), ({"KOKPIT_ROOT": "/srv/test root"}, "[/srv/test root]")],
)
def test_kokpit_root_defaults_when_the_host_sets_none(env: dict[str, str], expected: str) -> None:
    script = prelude(env) + 'echo "[$KOKPIT_ROOT]"\n'
    host_env = {"PATH": os.environ["PATH"]}
    done = subprocess.run(
        ["/bin/sh", "-eu"], input=script, env=host_env, capture_output=True, text=True, check=True
    )
    assert done.stdout == expected + "\n"


def test_env_names_must_be_shell_names() -> None:
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        prelude({"BAD NAME": "x"})


@pytest.mark.parametrize(
    ("script", "status", "stderr"),
    [
        ("echo before\nfalse\necho after", 1, ""),
        ('echo before\necho "$NOT_SET"\necho after', 2, "NOT_SET"),
        ("echo before\necho 'it broke' >&2\nexit 7\necho after", 7, "it broke\n"),
    ],
    ids=["errexit", "nounset", "exit"],
)
async def test_failing_command_fails_the_step(
    executor: SSHExecutor, ssh_hosts: list[SimulatedHost], script: str, status: int, stderr: str
) -> None:
    result = await executor.run(ssh_hosts[1].host(), step(script))
    assert (result.exit_status, result.stdout) == (status, "before\n")
    assert stderr in result.stderr_tail


async def test_stderr_tail_is_the_end(
    executor: SSHExecutor, ssh_hosts: list[SimulatedHost]
) -> None:
    script = "seq 1 5000 >&2\nexit 1"
    result = await executor.run(ssh_hosts[1].host(), step(script))
    assert not result.ok
    assert result.stderr_tail.endswith("4999\n5000\n")
    assert len(result.stderr_tail) == 2048


def pinned(pin: str, target: SimulatedHost, other: SimulatedHost) -> bytes:
    """known_hosts for ``target`` that does not pin its key."""
    where = f"[{target.address}]:{target.port}"
    if pin == "other host's key":
        return other.known_hosts.replace(f"[{other.address}]:{other.port}".encode(), where.encode())
    if pin == "fresh key":
        key = asyncssh.generate_private_key("ssh-ed25519").export_public_key()
        return where.encode() + b" " + key
    if pin == "key of another type":
        key = asyncssh.generate_private_key("ssh-rsa", key_size=2048).export_public_key()
        return where.encode() + b" " + key
    if pin == "another host only":
        return other.known_hosts
    assert pin == "none"
    return b""


@pytest.mark.parametrize(
    "pin", ["other host's key", "fresh key", "key of another type", "another host only", "none"]
)
async def test_host_key_not_pinned_is_refused(
    executor: SSHExecutor, ssh_hosts: list[SimulatedHost], pin: str
) -> None:
    target, other = ssh_hosts[0], ssh_hosts[1]
    known_hosts = pinned(pin, target, other)
    marker = f"ran-{secrets.token_hex(4)}"
    host = with_credentials(target, known_hosts=known_hosts)
    with pytest.raises(
        HostKeyMismatch, match=re.escape(f"{target.address}:{target.port}")
    ) as raised:
        await executor.run(host, step(f'touch "$KOKPIT_ROOT/{marker}"'))
    assert "Machine's SSH Secret" in str(raised.value)
    assert raised.value.reason == "HostKeyMismatch"
    assert not (target.root / marker).exists()


async def test_authentication_failure_is_unreachable(
    executor: SSHExecutor, ssh_hosts: list[SimulatedHost]
) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key()
    host = with_credentials(ssh_hosts[0], private_key=stranger)
    with pytest.raises(HostUnreachable, match=r"authentication as .* failed") as raised:
        await executor.run(host, step("true"))
    assert "PRIVATE KEY" not in str(raised.value)


async def test_stopped_host_is_unreachable_until_it_is_back(
    executor: SSHExecutor, ssh_hosts: list[SimulatedHost]
) -> None:
    target = ssh_hosts[2]
    assert (await executor.run(target.host(), step("echo up"))).stdout == "up\n"
    target.stop()
    try:
        started = time.monotonic()
        with pytest.raises(HostUnreachable, match=re.escape(f"{target.address}:{target.port}")):
            await executor.run(target.host(), step("echo up"))
        assert time.monotonic() - started < 2, "refused, not timed out"
    finally:
        target.start()
    assert (await executor.run(target.host(), step("echo up"))).stdout == "up\n"


async def test_host_that_never_answers_times_out(ssh_hosts: list[SimulatedHost]) -> None:
    with socket.socket() as silent:  # The kernel accepts connections; nothing speaks SSH.
        silent.bind(("127.0.10.200", 0))
        silent.listen()
        address, port = silent.getsockname()
        host = dataclasses.replace(ssh_hosts[0].host(), address=address, port=port)
        ssh = SSHExecutor(connect_timeout=1)
        try:
            started = time.monotonic()
            with pytest.raises(HostUnreachable, match=r"no connection within 1 s"):
                await ssh.run(host, step("true"))
            assert 1 <= time.monotonic() - started < 3
        finally:
            await ssh.close()


async def test_dropped_connection_is_reopened(
    executor: SSHExecutor, ssh_hosts: list[SimulatedHost]
) -> None:
    target = ssh_hosts[2]
    first = await executor.run(target.host(), step('echo "$SSH_CLIENT"'))
    for _ in range(3):
        target.drop_connections()
        again = await executor.run(target.host(), step('echo "$SSH_CLIENT"'))
        assert again.ok, again
        assert again.stdout != first.stdout, "a new connection (another client port)"
        first = again


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_step_exceeding_its_timeout_is_killed(
    executor: SSHExecutor, ssh_hosts: list[SimulatedHost]
) -> None:
    target = ssh_hosts[3]
    pids = f"pids-{secrets.token_hex(4)}"
    script = f"""
        echo "$$" > "$KOKPIT_ROOT/{pids}"
        sleep 600 &
        echo "$!" >> "$KOKPIT_ROOT/{pids}"
        echo started
        echo working >&2
        wait
    """
    started = time.monotonic()
    result = await executor.run(target.host(), step(script, timeout=1))
    assert time.monotonic() - started < 1 + KILL_GRACE
    assert result.exit_status == 124
    assert result.stdout == "started\n"
    assert result.stderr == "working\n\n... killed after 1 s"
    remote = [int(pid) for pid in (target.root / pids).read_text().split()]
    assert len(remote) == 2
    for _ in range(50):
        if not any(alive(pid) for pid in remote):
            break
        await asyncio.sleep(0.1)
    assert not any(alive(pid) for pid in remote), f"still running: {remote}"
    # The connection is still good for the next step.
    assert (await executor.run(target.host(), step("echo next"))).stdout == "next\n"


async def test_many_concurrent_steps_share_one_connection_per_host(
    executor: SSHExecutor, ssh_hosts: list[SimulatedHost]
) -> None:
    # 12 steps per host: more than OpenSSH's 10 sessions per connection.
    runs = [(host, i) for i in range(12) for host in ssh_hosts]
    tag = secrets.token_hex(4)
    script = f'sleep 0.2\ntouch "$KOKPIT_ROOT/{tag}-$N"\necho "$N $SSH_CLIENT"'
    results = await asyncio.gather(
        *(
            executor.run(host.host(), step(script, {"N": str(i)}, package=f"demo-{i}"))
            for host, i in runs
        )
    )
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    clients: dict[str, set[str]] = {}
    for (host, i), result in zip(runs, results, strict=True):
        n, client_address, client_port, _ = result.stdout.split()
        assert n == str(i)
        assert (host.root / f"{tag}-{i}").exists()
        clients.setdefault(host.name, set()).add(f"{client_address}:{client_port}")
    assert all(len(ports) == 1 for ports in clients.values()), clients


# -- hostile input, output without end, hung hosts, lost connections ---------------------------


def hostile(marks: Path) -> str:
    """Text that creates a file in ``marks`` if any of it runs as shell: command substitution,
    backticks, quotes closed early, a heredoc's end line, a leading dash, spaces."""
    return (
        f"-rf $(touch {marks}/dollar) `touch {marks}/backtick`"
        f"'; touch {marks}/single; '\"; touch {marks}/double; \""
        f"\nKOKPIT_UNIT\ntouch {marks}/heredoc\n"
    )


async def run_ok(executor: SSHExecutor, host: Host, package: dict[str, Any], action: str) -> str:
    made = packages.step(package, action, node_name="n1")  # type: ignore[arg-type]
    assert made is not None
    result = await executor.run(host, made)
    assert result.ok, result
    return result.stdout


async def test_hostile_values_reach_the_host_as_data(
    executor: SSHExecutor, ssh_hosts: list[SimulatedHost], tmp_path: Path
) -> None:
    # Straight to the host, past the API server's validation: the scripts alone must hold.
    target = ssh_hosts[0]
    marks = tmp_path / "marks"
    marks.mkdir()
    evil = hostile(marks)
    source = tmp_path / "tool"
    source.write_bytes(b"#!/bin/sh\necho tool\n")
    # Short parts (a file name has at most 255 bytes): the marks' path splits into several.
    path = (
        f"/opt/{secrets.token_hex(4)}/-rf/dir with spaces/$(touch {marks}/path)"
        f'/`touch {marks}/path`/it\'s "q";\nKOKPIT_UNIT\n/tool'
    )
    unit = f"[Service]\nExecStart=/opt/tool {evil}\n"
    package = {
        "name": f"tool-{secrets.token_hex(4)}",
        "kind": "Other",
        "version": f"1.0{evil}",
        "config": {"flags": evil, "--x": "-y"},
        "install": {
            "binary": {
                # curl takes a URL's query as data too; the quotes and $() are the host's problem.
                "url": f"file://{source}?$(touch%20{marks}/url)`id`'\"",
                "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
                "path": path,
                "systemdUnit": unit,
            }
        },
    }
    host = target.host()
    assert await run_ok(executor, host, package, "check") == ""
    await run_ok(executor, host, package, "install")
    landed = target.root / path.lstrip("/")
    assert landed.read_bytes() == source.read_bytes()
    unit_file = target.root / f"etc/systemd/system/{package['name']}.service"
    assert unit_file.read_text() == unit.rstrip("\n") + "\n"  # a text file's one newline
    assert await run_ok(executor, host, package, "check") == f"{package['version']}\n"
    await run_ok(executor, host, package, "verify")
    await run_ok(executor, host, package, "remove")
    assert not landed.exists()
    assert not unit_file.exists()
    assert list(marks.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/../../escaped", "kokpit: binary.path has an empty, '.' or '..' part: /../../escaped"),
        ("relative/tool", "kokpit: binary.path is not absolute: relative/tool"),
        ("/opt/", "has an empty"),
    ],
)
async def test_a_path_leaving_the_root_fails_the_step_clearly(
    executor: SSHExecutor,
    ssh_hosts: list[SimulatedHost],
    tmp_path: Path,
    path: str,
    message: str,
) -> None:
    target = ssh_hosts[0]
    source = tmp_path / "tool"
    source.write_text("x")
    binary = {
        "url": f"file://{source}",
        "sha256": hashlib.sha256(b"x").hexdigest(),
        "path": path,
    }
    package = {"name": "escape", "kind": "Other", "version": "1", "install": {"binary": binary}}
    outside = sorted(target.root.parent.iterdir())
    made = packages.step(package, "install", node_name="n1")
    assert made is not None
    result = await executor.run(target.host(), made)
    assert result.exit_status == 1
    assert message in result.stderr_tail
    assert sorted(target.root.parent.iterdir()) == outside


async def test_an_apt_package_is_one_argument_never_an_option(
    executor: SSHExecutor, ssh_hosts: list[SimulatedHost], tmp_path: Path
) -> None:
    # apt-get itself would touch this machine: a stand-in records its arguments instead.
    target = ssh_hosts[1]
    marks = tmp_path / "marks"
    marks.mkdir()
    fake = target.root / f"fake-bin-{secrets.token_hex(4)}"
    fake.mkdir()
    calls = fake / "calls"
    for name in ("apt-get", "dpkg-query"):
        (fake / name).write_text(
            f"#!/bin/sh\nprintf '[%s]' {name} \"$@\" >> {calls}\necho >> {calls}\n"
        )
        (fake / name).chmod(0o755)
    name = f"-o=APT::Get::Trivial-Only=true {hostile(marks)}"
    package = {
        "name": "containerd",
        "kind": "ContainerRuntime",
        "version": "1.7.2-1",
        "install": {"apt": {"package": name}},
    }
    for action in ("check", "install", "verify", "remove"):
        made = packages.step(package, action, node_name="n1")
        assert made is not None
        faked = dataclasses.replace(made, script=f'PATH="{fake}:$PATH"\n{made.script}')
        await executor.run(target.host(), faked)
    lines = calls.read_text().split("\n[")
    assert lines[1].endswith(f"[install][--][{name}=1.7.2-1]")
    assert lines[3].endswith(f"[remove][--][{name}]\n")
    assert list(marks.iterdir()) == []


async def test_a_host_printing_without_end_costs_bounded_memory(
    executor: SSHExecutor, ssh_hosts: list[SimulatedHost]
) -> None:
    size = 200 * 1024 * 1024
    script = (
        f"yes | head -c {size}\necho last line\nyes err | head -c {size // 4} >&2\necho bye >&2"
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    result = await executor.run(ssh_hosts[2].host(), step(script, timeout=600))
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert result.ok, result.stderr_tail
    assert len(result.stdout) == OUTPUT_TAIL
    assert result.stdout.endswith("y\ny\nlast line\n")
    assert len(result.stderr) == OUTPUT_TAIL
    assert result.stderr.endswith("err\nerr\nbye\n")
    assert grown < 64 * 1024, f"the operator grew by {grown} KiB reading {size} bytes"


async def test_a_hung_host_holds_only_its_own_steps(ssh_hosts: list[SimulatedHost]) -> None:
    hung, healthy = ssh_hosts[1], ssh_hosts[2]
    ssh = SSHExecutor(connect_timeout=5, max_sessions=4, sessions_per_connection=2)
    try:
        assert (await ssh.run(hung.host(), step("echo up"))).stdout == "up\n"
        hung.freeze()
        try:
            started = time.monotonic()
            stuck = [
                asyncio.create_task(ssh.run(hung.host(), step("true", package=f"p{i}")))
                for i in range(4)
            ]
            await asyncio.sleep(0.1)
            quick = await asyncio.gather(
                *(ssh.run(healthy.host(), step("echo ok", package=f"p{i}")) for i in range(8))
            )
            assert [r.stdout for r in quick] == ["ok\n"] * 8
            assert not any(task.done() for task in stuck), "the healthy host waited for the hung"
            errors = await asyncio.gather(*stuck, return_exceptions=True)
            elapsed = time.monotonic() - started
        finally:
            hung.thaw()
        assert all(isinstance(e, HostUnreachable) for e in errors), errors
        assert "did not open a session within 5 s" in str(errors[0])
        # Two sessions time out on the hung connection, then two connects (one at a time).
        assert elapsed < 4 * 5 + 5, "bounded by the connect timeout, not by keepalives"
        assert (await ssh.run(hung.host(), step("echo back"))).stdout == "back\n"
    finally:
        await ssh.close()


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_connections_of_forgotten_or_rekeyed_machines_are_closed(
    ssh_hosts: list[SimulatedHost],
) -> None:
    target = ssh_hosts[3]
    ssh = SSHExecutor()
    try:
        await until(lambda: target.connections() == 0)
        first = await ssh.run(target.host(), step('echo "$SSH_CLIENT"'))
        assert target.connections() == 1
        # The Machine's Secret pins the host again (re-keyed): the old connection is closed.
        rekeyed = with_credentials(target, known_hosts=target.known_hosts + b"# re-pinned\n")
        second = await ssh.run(rekeyed, step('echo "$SSH_CLIENT"'))
        assert second.stdout != first.stdout, "a new connection"
        await until(lambda: target.connections() == 1)
        await ssh.forget(rekeyed.key)
        await until(lambda: target.connections() == 0)
        await ssh.forget(rekeyed.key)  # twice is fine
        # A Machine forgotten by mistake only costs a new connection.
        assert (await ssh.run(rekeyed, step("echo again"))).stdout == "again\n"
    finally:
        await ssh.close()


async def test_a_rerun_waits_for_the_step_a_lost_connection_left_running(
    ssh_hosts: list[SimulatedHost],
) -> None:
    target = ssh_hosts[0]
    log = target.root / f"lock-{secrets.token_hex(4)}"
    package = f"slow-{secrets.token_hex(4)}"
    script = f"""
        echo "start $(date +%s.%N)" >> {log}
        sleep 4
        echo "end $(date +%s.%N)" >> {log}
    """
    crashed = SSHExecutor()
    orphan = asyncio.create_task(crashed.run(target.host(), step(script, package=package)))
    await until(log.exists)
    await crashed.close()  # as if the operator died: sshd leaves the step running
    with pytest.raises(HostUnreachable):
        await orphan
    restarted = SSHExecutor()
    try:
        other = await restarted.run(target.host(), step("echo free", package="another"))
        assert other.stdout == "free\n", "another package's steps do not wait"
        assert len(log.read_text().splitlines()) == 1, "the orphan is still running"
        rerun = await restarted.run(target.host(), step(script, package=package))
    finally:
        await restarted.close()
    assert rerun.ok, rerun
    assert "waiting for another run of this package's steps to end" in rerun.stderr
    events = [line.split() for line in log.read_text().splitlines()]
    assert [event for event, _ in events] == ["start", "end", "start", "end"]
    assert float(events[2][1]) >= float(events[1][1]), "the rerun started after the orphan ended"
