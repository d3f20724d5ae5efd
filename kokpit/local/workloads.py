"""Workloads for the local meta-cluster's simulated nodes (the demo's, and the tests')."""

from __future__ import annotations

from typing import Any

from kokpit.local.nodes import SIMULATED_LABEL


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
