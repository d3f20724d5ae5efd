import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kokpit.controllers.machine import packages
from kokpit.controllers.machine.node import _mirror_gates
from kokpit.controllers.machine.scope import MachineScope
from kokpit.providers.machine import Host, Step
from kokpit.providers.machine.sim import SimExecutor


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


def run_script(script: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-euc", script],
        env={"KOKPIT_ROOT": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_binary_helper_installs_checks_and_removes_under_the_root(tmp_path: Path) -> None:
    source = tmp_path / "tool"
    source.write_text("#!/bin/sh\necho hi\n")
    sha = subprocess.run(["sha256sum", str(source)], capture_output=True, text=True).stdout[:64]
    package = {
        "name": "tool",
        "kind": "Other",
        "version": "1.0",
        "install": {
            "binary": {"url": f"file://{source}", "sha256": sha, "path": "/usr/local/bin/tool"}
        },
    }
    root = tmp_path / "root"
    root.mkdir()
    steps = packages.scripts(package)
    assert run_script(steps["check"]["run"], root).stdout == ""
    assert run_script(steps["install"]["run"], root).returncode == 0
    assert (root / "usr/local/bin/tool").read_text() == source.read_text()
    assert run_script(steps["check"]["run"], root).stdout.strip() == "1.0"
    assert run_script(steps["verify"]["run"], root).returncode == 0
    # A download that does not match the pinned sha256 is refused and leaves nothing behind.
    bad = json.loads(json.dumps(package))
    bad["install"]["binary"]["sha256"] = "0" * 64
    bad["install"]["binary"]["path"] = "/opt/bad"
    failed = run_script(packages.scripts(bad)["install"]["run"], root)
    assert failed.returncode != 0
    assert "is not 0000" in failed.stderr
    assert list((root / "opt").iterdir()) == []
    assert run_script(steps["remove"]["run"], root).returncode == 0
    assert not (root / "usr/local/bin/tool").exists()


def test_the_apt_helper_pins_the_version() -> None:
    package = {
        "name": "containerd",
        "kind": "ContainerRuntime",
        "version": "1.6.20~ds1-1",
        "install": {"apt": {"package": "containerd"}},
    }
    steps = packages.scripts(package)
    assert "install 'containerd=1.6.20~ds1-1'" in steps["install"]["run"]
    assert set(steps) == {"check", "install", "upgrade", "remove", "verify"}


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
