import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kokpit.api.conditions import get
from kokpit.controllers.machine import status
from kokpit.controllers.machine.host import HostPhases
from kokpit.controllers.machine.node import _mirror_gates
from kokpit.controllers.machine.options import MachineOptions
from kokpit.controllers.machine.scope import MachineScope
from kokpit.providers.machine import Host, Step, packages
from kokpit.providers.machine.sim import SimExecutor
from kokpit.runtime import Store


def pkg(name: str, version: str, *, remove: bool = True, upgrade: bool = False) -> dict[str, Any]:
    script: dict[str, Any] = {"check": {"run": "c"}, "install": {"run": "i"}}
    if remove:
        script["remove"] = {"run": "r"}
    if upgrade:
        script["upgrade"] = {"run": "u"}
    return {"name": name, "kind": "Other", "version": version, "install": {"script": script}}


def test_next_change_installs_in_order_and_upgrades_what_differs() -> None:
    desired = [pkg("sysctl", "1"), pkg("containerd", "2", upgrade=True), pkg("kubelet", "3")]
    change = packages.next_change(desired, {}, [])
    assert change is not None
    assert (change.name, change.action) == ("sysctl", "install")
    change = packages.next_change(desired, {"sysctl": "1", "containerd": "1"}, [])
    assert change is not None
    assert (change.name, change.action) == ("containerd", "upgrade")
    # Without an upgrade step, an upgrade runs the install script.
    change = packages.next_change(desired, {"sysctl": "0", "containerd": "2"}, [])
    assert change is not None
    assert (change.name, change.action) == ("sysctl", "upgrade")
    upgrade = packages.step(change.package, "upgrade", node_name="n")
    assert upgrade is not None
    assert upgrade.script == "i"
    assert (
        packages.next_change(desired, {"sysctl": "1", "containerd": "2", "kubelet": "3"}, [])
        is None
    )


def test_retired_packages_are_removed_first_last_installed_first() -> None:
    applied = [pkg("a", "1"), pkg("b", "1"), pkg("c", "1", remove=False), pkg("d", "1")]
    desired = [pkg("d", "2")]
    retired = packages.retired(desired, applied)
    assert [p["name"] for p in retired] == ["a", "b", "c"]
    installed = {"a": "1", "b": "1", "c": "1", "d": "1"}
    change = packages.next_change(desired, installed, retired)
    assert change is not None
    assert (change.name, change.action) == ("b", "remove")
    # c has no remove step: it stays; then a goes; then d is upgraded.
    change = packages.next_change(desired, {**installed, "b": ""}, retired)
    assert change is not None
    assert (change.name, change.action) == ("a", "remove")
    change = packages.next_change(desired, {**installed, "a": "", "b": ""}, retired)
    assert change is not None
    assert (change.name, change.action) == ("d", "upgrade")


def test_step_env_carries_the_config_under_safe_names() -> None:
    package = {**pkg("containerd", "1.7.2"), "config": {"sandbox-image": "pause:3.10"}}
    step = packages.step(package, "install", node_name="n1")
    assert step is not None
    assert step.env == {
        "KOKPIT_PACKAGE": "containerd",
        "KOKPIT_VERSION": "1.7.2",
        "KOKPIT_NODE_NAME": "n1",
        "KOKPIT_CONFIG_SANDBOX_IMAGE": "pause:3.10",
    }
    assert packages.step(pkg("x", "1", remove=False), "remove", node_name="n1") is None
    # upgrade falls back to install
    assert packages.scripts(pkg("x", "1"))["upgrade"]["run"] == "i"


def run_script(
    package: dict[str, Any], action: str, root: Path, path: str = "/usr/bin:/bin"
) -> subprocess.CompletedProcess[str]:
    """Run a step's script as the ssh executor would: ``sh -eu``, its env exported."""
    step = packages.step(package, action, node_name="n1")  # type: ignore[arg-type]
    assert step is not None
    return subprocess.run(
        ["/bin/sh", "-euc", step.script],
        env={**step.env, "KOKPIT_ROOT": str(root), "PATH": path},
        capture_output=True,
        text=True,
        check=False,
    )


def binary_package(source: Path, path: str, unit: str = "") -> dict[str, Any]:
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    binary = {"url": f"file://{source}", "sha256": sha, "path": path, "systemdUnit": unit}
    return {"name": "tool", "kind": "Other", "version": "1.0", "install": {"binary": binary}}


def test_the_binary_helper_installs_checks_and_removes_under_the_root(tmp_path: Path) -> None:
    source = tmp_path / "tool"
    source.write_text("#!/bin/sh\necho hi\n")
    package = binary_package(source, "/usr/local/bin/tool", unit="[Service]\nExecStart=/t\n")
    root = tmp_path / "root"
    root.mkdir()
    assert run_script(package, "check", root).stdout == ""
    assert run_script(package, "install", root).returncode == 0
    assert (root / "usr/local/bin/tool").read_text() == source.read_text()
    unit = root / "etc/systemd/system/tool.service"
    assert unit.read_text() == "[Service]\nExecStart=/t\n"
    assert run_script(package, "check", root).stdout == "1.0\n"
    assert run_script(package, "verify", root).returncode == 0
    # A download that does not match the pinned sha256 is refused and leaves nothing behind.
    bad = json.loads(json.dumps(package))
    bad["install"]["binary"]["sha256"] = "0" * 64
    bad["install"]["binary"]["path"] = "/opt/bad"
    failed = run_script(bad, "install", root)
    assert failed.returncode != 0
    assert "is not 0000" in failed.stderr
    assert list((root / "opt").iterdir()) == []
    assert run_script(package, "remove", root).returncode == 0
    assert not (root / "usr/local/bin/tool").exists()
    assert not unit.exists()


@pytest.mark.parametrize(
    "part", ["-rf", "a b", "$(touch {m})", "`touch {m}`", 'it\'s "q"', "x\nKOKPIT_UNIT\n", "\n"]
)
def test_the_binary_helper_puts_the_file_exactly_at_its_path(tmp_path: Path, part: str) -> None:
    mark = tmp_path / "mark"
    source = tmp_path / "tool"
    source.write_text("x")
    path = f"/opt/{part.format(m=mark)}/{part.format(m=mark)}"
    root = tmp_path / "root"
    root.mkdir()
    done = run_script(binary_package(source, path), "install", root)
    assert done.returncode == 0, done.stderr
    assert (root / path.lstrip("/")).read_text() == "x"
    assert run_script(binary_package(source, path), "check", root).stdout == "1.0\n"
    assert not mark.exists()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/../outside", "has an empty, '.' or '..' part"),
        ("/usr/./bin", "has an empty, '.' or '..' part"),
        ("/usr//bin", "has an empty, '.' or '..' part"),
        ("/usr/bin/", "has an empty, '.' or '..' part"),
        ("usr/bin/tool", "is not absolute"),
        ("/", "has an empty"),
    ],
)
def test_the_binary_helper_refuses_paths_that_leave_the_root(
    tmp_path: Path, path: str, message: str
) -> None:
    source = tmp_path / "tool"
    source.write_text("x")
    root = tmp_path / "deep" / "root"
    root.mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    for action in ("check", "install", "verify", "remove"):
        done = run_script(binary_package(source, path), action, root)
        assert done.returncode == 1
        assert message in done.stderr
    assert sorted(tmp_path.rglob("*")) == before


def fake_commands(tmp_path: Path, *names: str) -> tuple[str, Path]:
    """A PATH whose ``names`` record their arguments, one per line, in a log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "argv.log"
    bin_dir.mkdir()
    for name in names:
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\nprintf '%s\\n' {name} \"$@\" >> {log}\n")
        script.chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin", log


@pytest.mark.parametrize("name", ["containerd", "-o=APT::Get::Trivial-Only", "$(id) `id` 'a\""])
def test_the_apt_helper_passes_the_package_as_one_argument(tmp_path: Path, name: str) -> None:
    package = {
        "name": "containerd",
        "kind": "ContainerRuntime",
        "version": "1.6.20~ds1-1",
        "install": {"apt": {"package": name}},
    }
    path, log = fake_commands(tmp_path, "apt-get", "dpkg-query")
    for action in ("install", "remove", "check"):
        assert run_script(package, action, tmp_path, path).returncode == 0
    calls = log.read_text().split("apt-get\n")[1:]
    assert calls[0].endswith(f"install\n--\n{name}=1.6.20~ds1-1\n")
    assert calls[1].endswith(
        f"remove\n--\n{name}\ndpkg-query\n-W\n-f=${{db:Status-Abbrev}} "
        f"${{Version}}\\n\n--\n{name}\n"
    )
    steps = {"check", "install", "upgrade", "remove", "verify", "restart"}
    assert set(packages.scripts(package)) == steps


def test_helper_values_reach_the_scripts_as_env_never_as_text() -> None:
    hostile = "$(touch /tmp/pwned)`id`'\"\nKOKPIT_UNIT\n-rf"
    binary = {"url": hostile, "sha256": hostile, "path": hostile, "systemdUnit": hostile}
    apt = {"package": hostile, "version": hostile}
    for method in ({"binary": binary}, {"apt": apt}):
        package = {"name": "p", "kind": "Other", "version": hostile, "install": method}
        for action, script in packages.scripts(package).items():
            assert "pwned" not in script["run"], action
            assert "KOKPIT_UNIT" not in script["run"], action
        step = packages.step(package, "install", node_name="n1")
        assert step is not None
        assert hostile in step.env.values()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"version": "1.0\n"}, "version '1.0\\n' must be printable ASCII without spaces"),
        ({"version": "1.0 "}, "version '1.0 ' must be printable ASCII"),
        ({"name": "../x"}, "name '../x' is not a package name"),
        ({"config": {"a-b": "1", "A.B": "2", "a_b": "3"}}, "'A.B', 'a-b', 'a_b' would all be"),
        ({"config": {"a b": "1"}}, "config key 'a b' must be"),
        ({"config": {"k": "a\0b"}}, "config 'k' must be a string without NUL"),
        ({"install": {"apt": {"package": "-y"}}}, "apt.package '-y' is not a Debian package"),
        ({"install": {"apt": {"package": "ok", "version": "1 2"}}}, "apt.version '1 2' is not"),
        (
            {"install": {"binary": {"url": "https://x/a b", "sha256": "a" * 64, "path": "/p"}}},
            "url",
        ),
        (
            {
                "install": {
                    "binary": {"url": "file:///etc/shadow", "sha256": "a" * 64, "path": "/p"}
                }
            },
            "url",
        ),
        (
            {"install": {"binary": {"url": "https://x/", "sha256": "a" * 64, "path": "/a/../b"}}},
            "path",
        ),
        ({"install": {"binary": {"url": "https://x/", "sha256": "a" * 64, "path": "/a/"}}}, "path"),
        (
            {"install": {"binary": {"url": "https://x/", "sha256": "A" * 64, "path": "/a"}}},
            "sha256",
        ),
    ],
)
def test_values_of_the_wrong_shape_are_problems(change: dict[str, Any], problem: str) -> None:
    package = {**pkg("p", "1.0"), **change}
    found = packages.problems(package)
    assert len(found) == 1, found
    assert problem in found[0]
    assert found[0].startswith(f"package {package['name']!r}: ")


def test_well_formed_values_are_no_problem() -> None:
    binary = {
        "url": "https://example.com/v1.7.2/tool?sig=a%2Bb&x=(1)#frag",
        "sha256": "a" * 64,
        "path": "/usr/local/bin/.tool-1.7.2+b1",
        "systemdUnit": "[Service]\nExecStart=/usr/local/bin/tool $ARGS\n",
    }
    config = {"sandbox-image": "pause:3.10", "Log.Level": "it's $(fine)\n"}
    tool = {**pkg("tool", "1.7.2-1+b1~rc1"), "config": config, "install": {"binary": binary}}
    apt = {**pkg("containerd", "1.0"), "install": {"apt": {"package": "containerd.io"}}}
    assert packages.problems(tool) == []
    assert packages.problems(apt) == []
    assert packages.problems(pkg("x", "v1.36.3")) == []


@pytest.mark.parametrize("stdout", ["1.0", "1.0\n", "1.0 \r\n", "installing...\n  1.0\t\n\n"])
def test_a_check_printing_the_version_with_spaces_needs_no_change(stdout: str) -> None:
    # The loop that never ends: the host is at 1.0, but the check's output never compares equal.
    reported = packages.reported_version(stdout)
    assert packages.next_change([pkg("a", "1.0")], {"a": reported}, []) is None
    # A version that could never compare equal is refused before any step runs.
    assert bool(packages.problems(pkg("a", stdout))) is (stdout != "1.0")


@pytest.mark.parametrize("failure_rate", [0.0, 1.0])
async def test_sim_executor_plays_the_package_steps(failure_rate: float) -> None:
    sim = SimExecutor(failure_rate=failure_rate)
    host = Host("ns/m1", "10.0.0.1")

    def step(action: str) -> Step:
        return Step("containerd", action, "2.0", "unused")  # type: ignore[arg-type]

    assert (await sim.run(host, step("check"))).stdout == ""
    installed = await sim.run(host, step("install"))
    assert installed.ok is (failure_rate == 0)
    assert (await sim.run(host, step("check"))).stdout == ("2.0" if failure_rate == 0 else "")
    sim.host("ns/m1").reachable = False
    with pytest.raises(Exception, match="unreachable"):
        await sim.run(host, step("check"))


def test_a_gate_dropped_from_the_spec_leaves_the_machines_conditions() -> None:
    def cond(type_: str) -> dict[str, str]:
        return {"type": type_, "status": "True", "reason": "R", "message": ""}

    machine: dict[str, Any] = {
        "metadata": {"name": "m", "namespace": "n"},
        "spec": {},
        "status": {"conditions": [cond("Ready"), cond("DiskReady"), cond("example.com/Net")]},
    }
    scope = MachineScope(machine)
    _mirror_gates(scope, [{"conditionType": "example.com/Net"}], {})
    assert [c["type"] for c in machine["status"]["conditions"]] == ["Ready", "example.com/Net"]
    assert scope.mirrored["example.com/Net"].status == "Unknown"


def test_a_machine_is_not_up_to_date_while_a_change_runs_on_its_host() -> None:
    """Moved back to the version it last applied after an upgrade failed half-way (the host
    has the new one's files): the intent stored before the reinstall must not say Ready at the
    old version, or a Rollout takes the rollback as done before the host is back."""
    machine: dict[str, Any] = {
        "metadata": {"name": "m", "namespace": "n", "generation": 3},
        "spec": {"packageVersion": "app-1"},
        "status": {"packageVersion": "app-1"},
    }
    scope = MachineScope(machine)
    scope.package_version = {"metadata": {"name": "app-1"}, "spec": {"packages": []}}
    status.update(scope)
    assert get(machine["status"]["conditions"], "Ready")["status"] == "True"  # type: ignore[index]
    scope.changing = "app"
    status.update(scope)
    installed = get(machine["status"]["conditions"], "PackagesInstalled")
    assert installed is not None
    assert (installed["status"], installed["reason"]) == ("False", "Installing")
    assert get(machine["status"]["conditions"], "Ready")["status"] == "False"  # type: ignore[index]


async def test_a_change_stored_running_by_a_dead_operator_counts_until_a_check_settles_it() -> None:
    """The operator died during a reinstall (or the host went away during it): the stored
    intent says Running. While the host cannot be checked, the Machine is not up to date; once
    every check finds the host as wanted, the operation is done and the Machine is Ready."""
    executor = SimExecutor(provisioned=True)
    phases = HostPhases(Store(), Store(), {"sim": executor}, MachineOptions())  # type: ignore[arg-type]
    running = {"package": "app", "step": "install", "result": "Running", "startedAt": "t0"}
    machine: dict[str, Any] = {
        "metadata": {"name": "m", "namespace": "n", "uid": "u", "generation": 3},
        "spec": {"packageVersion": "app-1", "executor": "sim", "address": "10.0.0.1"},
        "status": {"packageVersion": "app-1", "lastOperation": dict(running)},
    }
    script = {"check": {"run": "true"}, "install": {"run": "true"}}
    app = {"name": "app", "kind": "Other", "version": "1", "install": {"script": script}}

    def scope_now() -> MachineScope:
        scope = MachineScope(machine)
        scope.package_version = {"metadata": {"name": "app-1"}, "spec": {"packages": [app]}}
        return scope

    executor.host("n/m").reachable = False
    scope = scope_now()
    assert not await phases.reconcile_packages(scope)
    status.update(scope)
    installed = get(machine["status"]["conditions"], "PackagesInstalled") or {}
    assert (installed.get("status"), installed.get("reason")) == ("False", "Installing")
    assert get(machine["status"]["conditions"], "Ready")["status"] == "False"  # type: ignore[index]

    executor.host("n/m").reachable = True
    scope = scope_now()
    assert await phases.reconcile_packages(scope)
    status.update(scope)
    assert machine["status"]["lastOperation"]["result"] == "Succeeded"
    assert get(machine["status"]["conditions"], "Ready")["status"] == "True"  # type: ignore[index]
