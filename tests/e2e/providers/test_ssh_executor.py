"""The ``ssh`` executor against real OpenSSH servers on loopback (:mod:`tests.e2e.hosts`).

No Kubernetes here: only sshd. The hosts are shared by the session, so each test writes files
under a name of its own and starts again any host it stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from kokpit.providers.machine import Host, HostKeyMismatch, HostUnreachable, Step
from kokpit.providers.machine.ssh import KILL_GRACE, SSHExecutor, prelude
from tests.e2e.hosts import SimulatedHost


@pytest.fixture
async def executor() -> AsyncIterator[SSHExecutor]:
    ssh = SSHExecutor()
    try:
        yield ssh
    finally:
        await ssh.close()


def step(script: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> Step:
    return Step("demo", "install", "1.0", script, env or {}, timeout)


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
        *(executor.run(host.host(), step(script, {"N": str(i)})) for host, i in runs)
    )
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    clients: dict[str, set[str]] = {}
    for (host, i), result in zip(runs, results, strict=True):
        n, client_address, client_port, _ = result.stdout.split()
        assert n == str(i)
        assert (host.root / f"{tag}-{i}").exists()
        clients.setdefault(host.name, set()).add(f"{client_address}:{client_port}")
    assert all(len(ports) == 1 for ports in clients.values()), clients
