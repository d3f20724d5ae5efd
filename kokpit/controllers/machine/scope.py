"""What one reconcile of a Machine works on: the object (a private copy, written at the end
and before each risky step), its package version, and the facts phases record for status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kokpit.controllers.machine.gates import Report
from kokpit.providers.machine import Host

Object = dict[str, Any]
EventType = Literal["Normal", "Warning"]


@dataclass
class MachineScope:
    machine: Object
    #: The desired MachinePackageVersion (None until it is found).
    package_version: Object | None = None
    #: The last applied one, whose remove steps retire the packages the desired one dropped.
    applied_version: Object | None = None
    host: Host | None = None
    #: (reason, message) of facts the conditions report; None means nothing to report.
    host_problem: tuple[str, str] | None = None
    packages_problem: tuple[str, str] | None = None
    node_problem: tuple[str, str] | None = None
    gates_message: str | None = None
    gates_passed: bool | None = None
    #: Each readiness gate's condition, as reported, to mirror on the Machine.
    mirrored: dict[str, Report] = field(default_factory=dict)
    requeue_after: float | None = None
    #: Events to record once the status is written: (type, reason, message).
    events: list[tuple[EventType, str, str]] = field(default_factory=list)

    @property
    def spec(self) -> Object:
        spec: Object = self.machine["spec"]
        return spec

    @property
    def status(self) -> Object:
        status: Object = self.machine.setdefault("status", {})
        return status

    @property
    def name(self) -> str:
        return str(self.machine["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.machine["metadata"]["namespace"])

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def desired_packages(self) -> list[Object]:
        return list(self.package_version["spec"]["packages"]) if self.package_version else []

    @property
    def has_kubelet(self) -> bool:
        return any(p["kind"] == "Kubelet" for p in self.desired_packages)

    def requeue(self, seconds: float) -> None:
        """Ask to look again in ``seconds``; the smallest request of all phases wins."""
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds
