"""ClusterPackageVersions for the Kubernetes releases built on this machine (see
:mod:`kokpit.local.versions`): what the demo, the tests and the benchmarks apply."""

from __future__ import annotations

from typing import Any

from kokpit.local.assets import read_manifest, release_dir
from kokpit.local.versions import Release
from kokpit.providers.controlplane import DEFAULT_PROBES


def cluster_package(
    name: str,
    release: Release,
    *,
    apiserver_flags: dict[str, str] | None = None,
    controller_manager_flags: dict[str, str] | None = None,
    deadline_seconds: int = 60,
) -> dict[str, Any]:
    """A ClusterPackageVersion of a built release (etcd at the version the release ships)."""
    v = release.version
    etcd = str(read_manifest(release_dir(release))["etcd"])
    checks = [
        {"component": c, "path": probe.path, "deadlineSeconds": deadline_seconds}
        for c, probe in DEFAULT_PROBES.items()
    ]
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "ClusterPackageVersion",
        "metadata": {"name": name},
        "spec": {
            "kubernetesVersion": v,
            "components": {
                "etcd": {"version": etcd},
                "kubeAPIServer": {"version": v, "flags": apiserver_flags or {}},
                "kubeControllerManager": {"version": v, "flags": controller_manager_flags or {}},
                "kubeScheduler": {"version": v},
            },
            "healthChecks": checks,
        },
    }
