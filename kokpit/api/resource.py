"""A resource type and the REST paths that address it (a GroupVersionResource with its kind).

The client works with any resource, built-in or custom, without generated models: a
:class:`Resource` is just what is needed to build a URL, and objects are plain dicts. It lives
in ``api`` so that kokpit's own kinds declare their descriptors next to their types.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    """A resource type, e.g. ``Resource("apps", "v1", "deployments", "Deployment")``."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The REST path; a namespaced resource without a namespace means all namespaces."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural
