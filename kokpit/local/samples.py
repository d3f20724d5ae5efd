"""Sample objects for the demo, tests and benchmarks of the local meta-cluster.

``Widget`` is a custom resource kept deliberately tiny (``spec.size``,
``status.observedGeneration``, ``status.count``) so that what is measured is the machinery
around it, not the object. ``deployment`` is a workload pinned to the simulated nodes.
"""

from __future__ import annotations

from typing import Any

from kokpit.local.assets import read_manifest, release_dir
from kokpit.local.nodes import SIMULATED_LABEL
from kokpit.local.versions import Release
from kokpit.providers.controlplane import DEFAULT_PROBES
from kokpit.runtime.resources import Resource

WIDGETS = Resource("test.kokpit.io", "v1", "widgets", "Widget")


def widget_crd() -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
            "status": {
                "type": "object",
                "properties": {
                    "observedGeneration": {"type": "integer"},
                    "count": {"type": "integer"},
                },
            },
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{WIDGETS.plural}.{WIDGETS.group}"},
        "spec": {
            "group": WIDGETS.group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": WIDGETS.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def widget(namespace: str, name: str, size: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": WIDGETS.api_version,
        "kind": WIDGETS.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"size": size},
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """A Deployment whose pods only the simulated (kwok) nodes may run."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {SIMULATED_LABEL: "true"},
                    "containers": [{"name": name, "image": "registry.invalid/sample:1"}],
                },
            },
        },
    }


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


def cluster(
    namespace: str, name: str, package_version: str, runtime: str, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"packageVersion": package_version, "runtime": runtime, **spec},
    }
