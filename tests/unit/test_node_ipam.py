"""A Cluster's podCIDR reaches kube-controller-manager in both runtimes, which then gives each
node a podCIDR from it (the e2e test of the process runtime shows that part)."""

from __future__ import annotations

from pathlib import Path

from kokpit.local import components
from kokpit.local.assets import Assets
from kokpit.local.components import Layout, Ports, Settings
from kokpit.providers.controlplane import ControlPlane
from kokpit.providers.controlplane.kubernetes import _default_flags

IPAM = {
    "--allocate-node-cidrs=true",
    "--cluster-cidr=10.200.0.0/16",
    "--service-cluster-ip-range=10.100.0.0/16",
}


def controller_manager_argv(tmp_path: Path, settings: Settings) -> list[str]:
    ports = Ports(1, 2, 3, 4, 5, 6)
    component = components.build(
        components.controller_manager,
        Assets(tmp_path, "v1.36.3"),
        Layout(tmp_path),
        ports,
        settings,
    )
    return component.argv


def test_the_process_runtime_gives_kube_controller_manager_the_pod_cidr(tmp_path: Path) -> None:
    settings = Settings(service_cidr="10.100.0.0/16", pod_cidr="10.200.0.0/16")
    assert set(controller_manager_argv(tmp_path, settings)) >= IPAM


def test_a_package_flag_overrides_the_node_ipam_defaults(tmp_path: Path) -> None:
    settings = Settings(
        service_cidr="10.100.0.0/16",
        pod_cidr="10.200.0.0/16",
        flags={"kube-controller-manager": {"allocate-node-cidrs": "false"}},
    )
    argv = controller_manager_argv(tmp_path, settings)
    assert "--allocate-node-cidrs=false" in argv
    assert "--allocate-node-cidrs=true" not in argv


def test_the_meta_cluster_keeps_node_ipam_off(tmp_path: Path) -> None:
    argv = controller_manager_argv(tmp_path, Settings())
    assert not [a for a in argv if a.startswith(("--allocate-node-cidrs", "--cluster-cidr"))]


def test_the_kubernetes_runtime_gives_kube_controller_manager_the_pod_cidr() -> None:
    cp = ControlPlane("ns", "c1", "uid", service_cidr="10.100.0.0/16", pod_cidr="10.200.0.0/16")
    flags = _default_flags(cp, "kube-controller-manager")
    assert {f"--{k}={v}" for k, v in flags.items()} >= IPAM
    assert "cluster-cidr" not in _default_flags(cp, "kube-scheduler")
