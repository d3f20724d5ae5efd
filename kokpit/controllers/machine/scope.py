"""What one reconcile of a Machine works on: the object (a private copy, written at the end
and before each risky step), its package version, and the facts phases record for status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kokpit.controllers.machine.gates import Report
from kokpit.providers.machine import Host
from kokpit.runtime import ObjectScope

Object = dict[str, Any]


@dataclass
class MachineScope(ObjectScope):
    #: The desired MachinePackageVersion (None until it is found).
    package_version: Object | None = None
    #: The last applied one, whose remove steps retire the packages the desired one dropped.
    applied_version: Object | None = None
    host: Host | None = None
    #: (reason, message) of facts the conditions report; None means nothing to report.
    host_problem: tuple[str, str] | None = None
    packages_problem: tuple[str, str] | None = None
    #: The package whose change runs on the host now (its intent stored, its result not yet).
    changing: str | None = None
    node_problem: tuple[str, str] | None = None
    #: A mistake in how the operator or the Machine is set up (no such executor): a person must
    #: change something; nothing is retried until then.
    config_problem: tuple[str, str] | None = None
    gates_message: str | None = None
    gates_passed: bool | None = None
    #: Each readiness gate's condition, as reported, to mirror on the Machine.
    mirrored: dict[str, Report] = field(default_factory=dict)

    @property
    def machine(self) -> Object:
        return self.obj

    @property
    def desired_packages(self) -> list[Object]:
        return list(self.package_version["spec"]["packages"]) if self.package_version else []

    @property
    def has_kubelet(self) -> bool:
        return any(p["kind"] == "Kubelet" for p in self.desired_packages)

    @property
    def cluster_name(self) -> str:
        return str(self.spec["clusterRef"]["name"])

    @property
    def cluster_key(self) -> str:
        """The key of the Cluster this Machine joins (in the Machine's namespace)."""
        return f"{self.namespace}/{self.cluster_name}"
