"""The Kubernetes releases the local meta-cluster can be built from.

A release is pinned here rather than resolved at run time so that a build is reproducible and
a typo fails at once with the list of what can be built. Everything else is *derived* from the
release's own ``go.mod`` at build time: the staging modules to replace and the etcd version
kube-apiserver was tested with.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The kwok release that simulates nodes and pods (module ``sigs.k8s.io/kwok``).
KWOK_VERSION = "v0.8.0"


@dataclass(frozen=True)
class Release:
    """A Kubernetes release, e.g. ``v1.36.3``."""

    version: str

    @property
    def minor(self) -> int:
        return int(self.version.split(".")[1])

    @property
    def patch(self) -> int:
        return int(self.version.split(".")[2])

    @property
    def staging_version(self) -> str:
        """The version of the ``k8s.io/*`` staging modules cut with this release (``v0.36.3``)."""
        return f"v0.{self.minor}.{self.patch}"


#: Releases known to build and run here. The first is the default.
RELEASES: tuple[Release, ...] = (Release("v1.36.3"), Release("v1.35.4"))

DEFAULT_RELEASE = RELEASES[0]


class UnknownReleaseError(ValueError):
    """A Kubernetes version that is not in :data:`RELEASES`."""

    def __init__(self, version: str) -> None:
        known = ", ".join(r.version for r in RELEASES)
        super().__init__(
            f"Kubernetes {version!r} cannot be built by kokpit; versions that can: {known} "
            f"(default {DEFAULT_RELEASE.version})"
        )


def release(version: str | None = None) -> Release:
    """Look up a release by version (``v1.36.3`` or ``1.36.3``); ``None`` means the default."""
    if version is None:
        return DEFAULT_RELEASE
    wanted = version if version.startswith("v") else f"v{version}"
    for r in RELEASES:
        if r.version == wanted:
            return r
    raise UnknownReleaseError(version)
