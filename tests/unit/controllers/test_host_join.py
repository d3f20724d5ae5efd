"""A real host's kubelet joins by TLS bootstrap: the script that writes its bootstrap
kubeconfig (run here with /bin/sh, as the ssh executor runs it) and what the kubelet package's
steps are told."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from kokpit.controllers.machine.join import BOOTSTRAP_KUBECONFIG, WRITE_SCRIPT, kubelet_env
from kokpit.providers.machine import packages
from kokpit.providers.machine.ssh import prelude

TEXT = '{"users": [{"user": {"token": "abcdef.0123456789abcdef"}}]}\n$(touch pwned) `id` \'"\n'


def write(root: Path, text: str) -> subprocess.CompletedProcess[str]:
    script = prelude({"KOKPIT_BOOTSTRAP_KUBECONFIG_TEXT": text}) + WRITE_SCRIPT
    return subprocess.run(
        ["/bin/sh", "-eu"],
        input=script,
        text=True,
        capture_output=True,
        env={"PATH": os.environ["PATH"], "KOKPIT_ROOT": str(root)},
        cwd=root,
        check=False,
    )


def test_the_bootstrap_kubeconfig_is_written_whole_private_and_as_data(tmp_path: Path) -> None:
    result = write(tmp_path, TEXT)
    assert result.returncode == 0, result.stderr
    path = tmp_path / BOOTSTRAP_KUBECONFIG.lstrip("/")
    assert path.read_text() == TEXT
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert not (tmp_path / "pwned").exists()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left
    assert "abcdef" not in result.stdout + result.stderr


def test_a_new_token_replaces_the_file(tmp_path: Path) -> None:
    assert write(tmp_path, "old\n").returncode == 0
    assert write(tmp_path, "new\n").returncode == 0
    path = tmp_path / BOOTSTRAP_KUBECONFIG.lstrip("/")
    assert path.read_text() == "new\n"
    assert len(list(path.parent.iterdir())) == 1


def test_the_kubelet_registers_with_the_machines_taints_and_kokpits_while_gates_pend() -> None:
    spec = {
        "address": "192.0.2.7",
        "taints": [{"key": "example.com/dedicated", "value": "db", "effect": "NoExecute"}],
        "readinessGates": [{"conditionType": "NetworkReady"}],
    }
    env = kubelet_env(spec)
    assert env == {
        "KOKPIT_BOOTSTRAP_KUBECONFIG": "/etc/kubernetes/bootstrap-kubelet.conf",
        "KOKPIT_REGISTER_WITH_TAINTS": "example.com/dedicated=db:NoExecute,"
        "kokpit.io/not-ready:NoSchedule",
        "KOKPIT_NODE_IP": "192.0.2.7",
    }
    assert kubelet_env({"address": "192.0.2.7"})["KOKPIT_REGISTER_WITH_TAINTS"] == ""


def test_the_operators_environment_reaches_the_step_and_the_packages_own_stays() -> None:
    package = {
        "name": "kubelet",
        "kind": "Kubelet",
        "version": "1.36.3",
        "config": {"cgroup-root": "/kokpit"},
        "install": {"script": {"check": {"run": "true"}, "install": {"run": "true"}}},
    }
    step = packages.step(
        package, "install", node_name="n1", extra_env={"KOKPIT_NODE_IP": "1.2.3.4"}
    )
    assert step is not None
    assert step.env["KOKPIT_NODE_IP"] == "1.2.3.4"
    assert step.env["KOKPIT_CONFIG_CGROUP_ROOT"] == "/kokpit"
    assert step.env["KOKPIT_NODE_NAME"] == "n1"
