"""The ``process`` control-plane runtime: a real business control plane as local processes,
created, upgraded component by component, adopted by a restarted operator, and deleted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from kokpit.local import Kubectl
from kokpit.local.assets import read_manifest, release_dir
from kokpit.local.components import Layout
from kokpit.local.supervisor import Supervisor
from kokpit.local.versions import Release
from kokpit.pki import ADMIN, kubeconfig
from kokpit.providers.controlplane import ORDER, ComponentPlan, ControlPlane, PlanError
from kokpit.providers.controlplane.process import ProcessRuntime, business_pki

OLD, NEW = Release("v1.35.4"), Release("v1.36.3")


def plan(name: str, release: Release) -> ComponentPlan:
    version = release.version
    if name == "etcd":
        version = str(read_manifest(release_dir(release))["etcd"])
    return ComponentPlan(name, version)  # type: ignore[arg-type]


async def healthy(runtime: ProcessRuntime, cp: ControlPlane, name: str, version: str) -> None:
    for _ in range(300):
        h = await runtime.health(cp, name)  # type: ignore[arg-type]
        if h.ready and h.version == version:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name} {version} not healthy: {h}")


async def test_create_upgrade_adopt_delete(tmp_path: Path, kubectl: Kubectl) -> None:
    for r in (OLD, NEW):
        assert (release_dir(r) / "manifest.json").exists(), f"`make assets` builds {r.version}"
    pki = business_pki(tmp_path / "pki", "10.100.0.0/16", cluster="team-a/c1", cluster_uid="uid-1")
    pki.ensure()
    cp = ControlPlane(
        namespace="team-a", name="c1", uid="uid-1", pki=pki.material(), service_cidr="10.100.0.0/16"
    )
    runtime = ProcessRuntime(tmp_path / "controlplanes")
    try:
        for name in ORDER:
            await runtime.apply(cp, plan(name, OLD))
            await healthy(runtime, cp, name, plan(name, OLD).version)
        endpoint = await runtime.endpoint(cp)
        assert endpoint is not None
        admin = tmp_path / "admin.kubeconfig"
        kubeconfig.write(admin, server=endpoint, pki=pki, who=ADMIN, cluster_name="c1")
        business = Kubectl(kubectl.binary, admin)
        assert json.loads(business.run("get", "--raw", "/version"))["gitVersion"] == "v1.35.4"
        business.run("create", "configmap", "keep", "--from-literal=answer=42")

        for name in ORDER:  # the version-skew order
            await runtime.apply(cp, plan(name, NEW))
            await healthy(runtime, cp, name, plan(name, NEW).version)
        assert json.loads(business.run("get", "--raw", "/version"))["gitVersion"] == "v1.36.3"
        assert business.get("configmap", "keep")["data"] == {"answer": "42"}

        # A restarted operator applies the same plan again: nothing is restarted.
        supervisor = Supervisor(Layout(tmp_path / "controlplanes" / cp.uid))
        pids = {n: e["pid"] for n, e in supervisor.state()["processes"].items()}
        restarted = ProcessRuntime(tmp_path / "controlplanes")
        for name in ORDER:
            await restarted.apply(cp, plan(name, NEW))
        assert {n: e["pid"] for n, e in supervisor.state()["processes"].items()} == pids

        with pytest.raises(PlanError, match=r"kokpit local build --version v1\.99\.0"):
            await runtime.apply(cp, ComponentPlan("kube-apiserver", "v1.99.0"))
    finally:
        await runtime.delete(cp)
    assert not (tmp_path / "controlplanes" / cp.uid).exists()
    assert not any(_running(pid) for pid in pids.values()), "every process stopped"


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"
