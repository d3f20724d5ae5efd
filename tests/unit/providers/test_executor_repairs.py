"""The soft repairs over a Machine's executor: which step each action runs, where a restart
command comes from (the package's restart step), and what the scripts do on a host (run here
with ``sh -eu`` as the ssh executor would, with fake systemctl/nohup on the PATH)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kokpit.api.v1alpha1 import MACHINE_PACKAGE_VERSIONS
from kokpit.providers.machine import packages
from kokpit.providers.machine.sim import SimExecutor
from kokpit.providers.repair import RepairError, RepairTarget
from kokpit.providers.repair.executor import REBOOT_SCRIPT, ExecutorRepairer
from kokpit.runtime import NotFound, Resource

Object = dict[str, Any]


class Objects:
    """A reader over a few objects (what the repairer reads: the package version)."""

    def __init__(self, *objs: Object) -> None:
        self._objs = {o["metadata"]["name"]: o for o in objs}

    async def get(self, res: Resource, name: str, *, namespace: str | None = None) -> Object:
        if res != MACHINE_PACKAGE_VERSIONS or name not in self._objs:
            raise NotFound(f"{name} not found")
        return self._objs[name]


def script_package(name: str, kind: str, restart: str | None) -> Object:
    steps: Object = {"check": {"run": "true"}, "install": {"run": "true"}}
    if restart is not None:
        steps["restart"] = {"run": restart}
    return {"name": name, "kind": kind, "version": "1", "install": {"script": steps}}


def binary_package(name: str, kind: str, unit: str) -> Object:
    binary = {
        "url": "https://example.com/kubelet",
        "sha256": "0" * 64,
        "path": "/usr/bin/kubelet",
        "systemdUnit": unit,
    }
    return {"name": name, "kind": kind, "version": "1", "install": {"binary": binary}}


def version(*pkgs: Object) -> Object:
    return {"metadata": {"name": "pv"}, "spec": {"packages": list(pkgs)}}


def target() -> RepairTarget:
    machine = {
        "metadata": {"name": "m1", "namespace": "ns"},
        "spec": {"executor": "sim", "address": "10.0.0.1", "packageVersion": "pv"},
    }
    return RepairTarget("ns", machine, "m1", "biz", "KubeletUnhealthy", "m1.kubeletunhealthy")


async def test_restarts_run_the_packages_restart_step_and_reboots_are_counted() -> None:
    sim = SimExecutor()
    pv = version(
        script_package("kubelet", "Kubelet", "systemctl restart kubelet"),
        binary_package("containerd", "ContainerRuntime", "[Service]\nExecStart=/x\n"),
    )
    repairer = ExecutorRepairer(Objects(pv), {"sim": sim})
    assert "RestartKubelet" in await repairer.repair("RestartKubelet", target())
    await repairer.repair("RestartContainerRuntime", target())
    await repairer.repair("Reboot", target())
    assert sim.host("ns/m1").history == [
        ("kubelet", "restart"),
        ("containerd", "restart"),
        ("reboot", "reboot"),
    ]
    assert sim.host("ns/m1").count("reboot") == 1


@pytest.mark.parametrize(
    ("pv", "reason"),
    [
        (version(script_package("kubelet", "Kubelet", None)), "NoRestartStep"),
        (version(binary_package("kubelet", "Kubelet", "")), "NoRestartStep"),
        (version(script_package("tools", "Other", "true")), "NoPackage"),
        (version(), "PackageVersionNotFound"),
    ],
)
async def test_a_package_that_cannot_restart_is_a_repair_error_saying_so(
    pv: Object, reason: str
) -> None:
    objects = Objects(pv) if pv["spec"]["packages"] else Objects()
    sim = SimExecutor()
    with pytest.raises(RepairError) as failed:
        await ExecutorRepairer(objects, {"sim": sim}).repair("RestartKubelet", target())
    assert failed.value.reason == reason
    assert sim.host("ns/m1").history == []  # nothing ran


async def test_a_disabled_executor_and_a_failing_step_are_repair_errors() -> None:
    with pytest.raises(RepairError) as failed:
        await ExecutorRepairer(Objects(), {}).repair("Reboot", target())
    assert failed.value.reason == "ExecutorNotEnabled"
    assert "--executors" in str(failed.value)
    sim = SimExecutor(failure_rate=1.0)
    with pytest.raises(RepairError) as failed:
        await ExecutorRepairer(Objects(), {"sim": sim}).repair("Reboot", target())
    assert failed.value.reason == "StepFailed"


def fakes(tmp_path: Path, *names: str) -> tuple[str, Path]:
    """A PATH whose ``names`` only record their arguments."""
    bin_dir, log = tmp_path / "bin", tmp_path / "argv.log"
    bin_dir.mkdir()
    for name in names:
        (bin_dir / name).write_text(f"#!/bin/sh\nprintf '%s\\n' {name} \"$@\" >> {log}\n")
        (bin_dir / name).chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin", log


def run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-euc", script], env=env, capture_output=True, text=True, check=False
    )


def test_the_systemd_restart_restarts_the_unit_named_after_the_package(tmp_path: Path) -> None:
    path, log = fakes(tmp_path, "systemctl")
    package = binary_package("kubelet", "Kubelet", "[Service]\n")
    step = packages.step(package, "restart", node_name="m1")
    assert step is not None
    real = run(step.script, {**step.env, "KOKPIT_ROOT": "", "PATH": path})
    assert real.returncode == 0, real.stderr
    assert log.read_text().splitlines() == ["systemctl", "restart", "--", "kubelet.service"]
    root = tmp_path / "root"
    simulated = run(step.script, {**step.env, "KOKPIT_ROOT": str(root), "PATH": path})
    assert simulated.returncode == 0, simulated.stderr
    assert (root / "var/lib/kokpit/restarts.log").read_text().startswith("restart kubelet ")
    assert len(log.read_text().splitlines()) == 4  # no systemctl on a simulated host


def test_the_reboot_is_detached_on_a_real_host_and_recorded_on_a_simulated_one(
    tmp_path: Path,
) -> None:
    path, log = fakes(tmp_path, "nohup", "systemctl", "reboot")
    env = {"KOKPIT_NODE_NAME": "m1", "PATH": path}
    real = run(REBOOT_SCRIPT, {**env, "KOKPIT_ROOT": ""})
    assert real.returncode == 0, real.stderr
    deadline = time.monotonic() + 10  # the fake nohup runs in the background
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    argv = log.read_text().splitlines()
    assert argv[:2] == ["nohup", "setsid"]  # in the background, in a session of its own
    root = tmp_path / "root"
    for _ in range(2):
        assert run(REBOOT_SCRIPT, {**env, "KOKPIT_ROOT": str(root)}).returncode == 0
    assert len((root / "var/lib/kokpit/reboots.log").read_text().splitlines()) == 2
    assert log.read_text().splitlines() == argv  # nothing more ran for real
