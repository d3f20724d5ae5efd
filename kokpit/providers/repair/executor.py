"""Soft repairs over the Machine's executor: restart the kubelet, restart the container
runtime, reboot the host.

Where a restart command comes from: the package that installed the component knows how to
restart it. The Machine's MachinePackageVersion (the one applied, else the one asked for) has at
most one package of kind Kubelet and usually one of kind ContainerRuntime; its ``restart`` step
is a script package's own, or for apt packages and binaries with a systemd unit a restart of
the unit named after the package (:func:`kokpit.providers.machine.packages.scripts`). A package
without one is a :class:`~kokpit.providers.repair.RepairError` saying so, not a guess.

A reboot is a fixed command, run detached after a short pause so that the SSH session ends
before the host goes down (the executor would otherwise report a lost connection for a reboot
that is happening). On a simulated host (a non-empty ``KOKPIT_ROOT``) it is recorded in
``var/lib/kokpit/reboots.log`` instead: the record outlives the operator, so a test can count
reboots across an operator's crash.

Nothing of the Machine becomes script text: the package's values reach its steps as quoted
environment variables, as in the Machine-Operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from kokpit.api.v1alpha1 import MACHINE_PACKAGE_VERSIONS
from kokpit.providers.machine import (
    Credentials,
    Executor,
    Host,
    HostError,
    InvalidCredentials,
    Step,
)
from kokpit.providers.machine import packages as package_steps
from kokpit.providers.repair import RepairError, RepairTarget
from kokpit.runtime import ApiError, NotFound, Resource
from kokpit.runtime.resources import SECRETS

#: The package kind whose ``restart`` step each restart action runs.
RESTARTS = {"RestartKubelet": "Kubelet", "RestartContainerRuntime": "ContainerRuntime"}

REBOOT_SCRIPT = """\
if [ -z "$KOKPIT_ROOT" ]; then
  nohup setsid sh -c 'sleep 2; systemctl reboot || reboot' </dev/null >/dev/null 2>&1 &
  echo "reboot of $KOKPIT_NODE_NAME scheduled in 2 s"
else
  mkdir -p -- "$KOKPIT_ROOT/var/lib/kokpit"
  echo "reboot $(date +%s.%N)" >> "$KOKPIT_ROOT/var/lib/kokpit/reboots.log"
  echo "reboot of $KOKPIT_NODE_NAME recorded (simulated host)"
fi
"""
#: How long the reboot step (which only schedules the reboot) may take.
REBOOT_STEP_TIMEOUT = 60.0


class Reader(Protocol):
    """What the repairer reads from the meta-cluster (a :class:`~kokpit.runtime.Client`):
    the Machine's MachinePackageVersion and SSH Secret."""

    async def get(
        self, res: Resource, name: str, *, namespace: str | None = None
    ) -> dict[str, Any]: ...


def _error(reason: str, message: str) -> RepairError:
    error = RepairError(message)
    error.reason = reason
    return error


class ExecutorRepairer:
    """A :class:`~kokpit.providers.repair.Repairer` for RestartKubelet,
    RestartContainerRuntime and Reboot, over the executors the operator enables."""

    actions = frozenset({*RESTARTS, "Reboot"})
    repeatable: frozenset[str] = frozenset()

    def __init__(self, client: Reader, executors: Mapping[str, Executor]) -> None:
        self._client = client
        self._executors = executors

    async def repair(self, action: str, target: RepairTarget) -> str:
        executor, host = await self._host(target)
        step = self.reboot(target) if action == "Reboot" else await self._restart(action, target)
        try:
            result = await executor.run(host, step)
        except HostError as e:
            raise _error(e.reason, f"{action} on {target.machine_name}: {e}") from None
        if not result.ok:
            detail = result.stderr_tail or "no stderr"
            raise _error(
                "StepFailed",
                f"{action}: {step.package} {step.action} exited {result.exit_status}: {detail}",
            )
        done = result.stdout.strip().splitlines()[-1:] or [f"{step.package} {step.action} ran"]
        return f"{action}: {done[0][:512]}"

    @staticmethod
    def reboot(target: RepairTarget) -> Step:
        return Step(
            package="reboot",
            action="reboot",
            version="",
            script=REBOOT_SCRIPT,
            env={"KOKPIT_NODE_NAME": target.node_name},
            timeout_seconds=REBOOT_STEP_TIMEOUT,
        )

    async def _restart(self, action: str, target: RepairTarget) -> Step:
        kind = RESTARTS[action]
        machine = target.machine
        name = (machine.get("status") or {}).get("packageVersion") or machine["spec"][
            "packageVersion"
        ]
        try:
            version = await self._client.get(MACHINE_PACKAGE_VERSIONS, name)
        except NotFound:
            raise _error(
                "PackageVersionNotFound", f"MachinePackageVersion {name} not found"
            ) from None
        except ApiError as e:
            raise _error("PackageVersionUnreadable", f"MachinePackageVersion {name}: {e}") from None
        package: dict[str, Any] | None = next(
            (p for p in version["spec"]["packages"] if p.get("kind") == kind), None
        )
        if package is None:
            raise _error("NoPackage", f"MachinePackageVersion {name} has no {kind} package")
        if problems := package_steps.problems(package):
            raise _error("InvalidPackage", "; ".join(problems))
        step = package_steps.step(package, "restart", node_name=target.node_name)
        if step is None:
            raise _error(
                "NoRestartStep",
                f"package {package['name']} of MachinePackageVersion {name} has no restart "
                "step (give its script steps one, or install it with a systemd unit)",
            )
        return step

    async def _host(self, target: RepairTarget) -> tuple[Executor, Host]:
        spec = target.machine["spec"]
        kind = spec.get("executor", "ssh")
        executor = self._executors.get(kind)
        if executor is None:
            raise _error(
                "ExecutorNotEnabled",
                f"the {kind} executor is not enabled in this operator; start it with "
                f"--executors including {kind}",
            )
        credentials = None
        if kind == "ssh":
            credentials = await self._credentials(target)
        key = f"{target.namespace}/{target.machine_name}"
        return executor, Host(key, spec["address"], spec.get("port", 22), credentials)

    async def _credentials(self, target: RepairTarget) -> Credentials:
        ref = target.machine["spec"].get("sshSecretRef") or {}
        name = ref.get("name")
        if not name:
            raise _error("InvalidSecret", f"Machine {target.machine_name} names no SSH Secret")
        try:
            secret = await self._client.get(SECRETS, name, namespace=target.namespace)
        except NotFound:
            raise _error("SecretNotFound", f"SSH Secret {name} not found") from None
        except ApiError as e:
            raise _error("SecretUnreadable", f"SSH Secret {name}: {e.reason or e.code}") from None
        try:
            return Credentials.from_secret_data(secret.get("data") or {}, secret=name)
        except InvalidCredentials as e:
            raise _error(e.reason, str(e)) from None
