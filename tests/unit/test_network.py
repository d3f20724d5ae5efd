"""A Cluster's address ranges as its components see them: the podCIDR reaches
kube-controller-manager in both runtimes, which then gives each node a podCIDR from it (the e2e
test of the process runtime shows that part); the serviceCIDR's first address is the API
server's."""

from __future__ import annotations

from pathlib import Path

import pytest

from kokpit.local import components
from kokpit.local.assets import Assets
from kokpit.local.components import Layout, Ports, Settings
from kokpit.providers.controlplane import ControlPlane
from kokpit.providers.controlplane.kubernetes import _default_flags
from kokpit.providers.controlplane.process import first_service_ip

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


@pytest.mark.parametrize(
    ("service_cidr", "ip"),
    [
        ("10.96.0.0/12", "10.96.0.1"),
        ("10.96.0.0/30", "10.96.0.1"),
        ("fd00::/64", "fd00::1"),
        # Host bits (refused by the API now, but an older Cluster may have them) are ignored,
        # as kube-apiserver ignores them: the reconcile must not fail on them forever.
        ("10.96.0.9/12", "10.96.0.1"),
    ],
)
def test_the_kubernetes_service_ip_is_the_first_of_the_range(service_cidr: str, ip: str) -> None:
    assert first_service_ip(service_cidr) == ip
