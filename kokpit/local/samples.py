"""A sample custom resource, ``Widget``, for runtime tests and benchmarks.

Deliberately tiny (``spec.size``, ``status.observedGeneration``, ``status.count``) so that what
is measured is the machinery around it, not the object.
"""

from __future__ import annotations

from typing import Any

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
