"""The host's packages: find the package version, then check every package and change one at
a time (retired packages removed first), verifying and checking again after each change.

Crash safety: before a step that changes the host, the step is written to
``status.lastOperation`` (result Running). A restarted operator does not trust that record: it
runs every package's ``check`` again and takes the next change from what the host reports.
Steps are idempotent and hold a per-package lock on the host, so a step that may have run runs
again at most — never at the same time as its orphan — and is never skipped.

Re-provisioning (the annotation :data:`~kokpit.api.v1alpha1.machine.REPROVISION_ANNOTATION`,
written by the Remediation workflow's Reprovision rung): once the host is at its version, every
package is installed again, in order, with its install step even though its check says it is
there (its steps see ``KOKPIT_REPROVISION=true``; apt packages are reinstalled), then verified
and checked. The request's token is recorded in ``status.reprovisioned`` only after the last
package, so each token is served once: a token already recorded is never served again, and an
operator killed midway serves it again from the first package (at least once, like any step).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from kokpit.api.conditions import now
from kokpit.api.v1alpha1.machine import REPROVISION_ANNOTATION, REPROVISION_TOKEN_MAX
from kokpit.controllers.machine.options import MachineOptions
from kokpit.controllers.machine.scope import MachineScope, Object
from kokpit.providers.machine import (
    Action,
    Credentials,
    Executor,
    Host,
    HostError,
    HostKeyMismatch,
    HostUnreachable,
    InvalidCredentials,
    StepResult,
    packages,
)
from kokpit.providers.machine.packages import Change
from kokpit.runtime import Backoff, Client, Forbidden, NotFound, Recently
from kokpit.runtime.resources import SECRETS
from kokpit.runtime.store import Store

#: Set on a deleted Machine to skip removing its packages (the host is gone for good).
SKIP_HOST_CLEANUP = "kokpit.io/skip-host-cleanup"


class ConfigProblem(Exception):
    """Something a person must change in the operator's or the Machine's set-up."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class HostPhases:
    def __init__(
        self,
        client: Client,
        package_versions: Store,
        executors: Mapping[str, Executor],
        options: MachineOptions,
        before_changes: Callable[[MachineScope, Executor], Awaitable[bool]] | None = None,
        step_env: Callable[[MachineScope, Object], Mapping[str, str]] | None = None,
    ) -> None:
        """``before_changes`` runs on the host once it is reached, before any package is
        checked or changed (False ends the reconcile); ``step_env`` adds to a package's
        steps' environment."""
        self._client = client
        self._before_changes = before_changes
        self._step_env = step_env
        self._package_versions = package_versions
        self._executors = executors
        self._options = options
        self._backoff = Backoff(options.min_backoff, options.max_backoff)
        #: (generation, package version) whose checks passed lately: skip checking again.
        self._checked: Recently[tuple[int, str]] = Recently(options.recheck_interval)

    # -- phases ------------------------------------------------------------------------------

    async def find_package_version(self, scope: MachineScope) -> bool:
        name = scope.spec["packageVersion"]
        scope.package_version = self._package_versions.get(name)
        applied = scope.status.get("packageVersion")
        if applied and applied != name:
            scope.applied_version = self._package_versions.get(applied)
        if scope.package_version is None:
            message = f"MachinePackageVersion {name} not found"
            scope.packages_problem = ("PackageVersionNotFound", message)
            return scope.deleting  # a delete goes on without one (nothing to remove)
        return True

    async def reconcile_packages(self, scope: MachineScope) -> bool:
        reprovision = self._reprovision_request(scope)
        if reprovision is None and self._checked.holds(scope.uid, _checked_token(scope)):
            return True
        desired = scope.desired_packages
        applied = scope.applied_version["spec"]["packages"] if scope.applied_version else []
        retired = packages.retired(desired, applied)
        if invalid := [problem for package in desired for problem in packages.problems(package)]:
            # Stored before the API server refused such values: nothing runs on the host.
            self._package_failed(scope, "InvalidPackage", "; ".join(invalid))
            return False
        try:
            executor = await self._connect(scope)
            if executor is None:
                return False
            if self._before_changes is not None and not await self._before_changes(scope, executor):
                return False
            installed = await self._check(scope, executor, [*desired, *retired])
            if installed is None:
                return False
            while (change := packages.next_change(desired, installed, retired)) is not None:
                if not await self._change(scope, executor, change, installed):
                    return False
            if reprovision is not None:
                for package in desired:
                    change = Change(package, "install")
                    if not await self._change(scope, executor, change, installed, reprovision=True):
                        return False
        except HostError as e:
            self._host_failed(scope, e)
            return False
        operation = scope.status.get("lastOperation") or {}
        if operation.get("result") == "Running":
            # Left by an operator that died during it: every check now finds the host as
            # wanted, so it is done (it finished before the death, or was run again above).
            operation.update(result="Succeeded", finishedAt=now())
        scope.status["packageVersion"] = scope.spec["packageVersion"]
        scope.status["packages"] = [
            {"name": p["name"], "version": installed.get(p["name"], "")} for p in desired
        ]
        if reprovision is not None:
            scope.status["reprovisioned"] = reprovision
            await scope.persist()  # served: never again for this token
            message = f"every package of {scope.spec['packageVersion']} was installed again"
            scope.event("Normal", "Reprovisioned", f"{message} (request {reprovision})")
        self._checked.remember(scope.uid, _checked_token(scope))
        return True

    def _reprovision_request(self, scope: MachineScope) -> str | None:
        """The token of a re-provisioning request not served yet (None: there is none)."""
        token = (scope.metadata.get("annotations") or {}).get(REPROVISION_ANNOTATION)
        if not token or token == scope.status.get("reprovisioned"):
            return None
        if len(token) > REPROVISION_TOKEN_MAX:
            message = (
                f"{REPROVISION_ANNOTATION} is longer than {REPROVISION_TOKEN_MAX} characters: "
                "not served"
            )
            scope.event("Warning", "InvalidReprovisionRequest", message)
            return None
        return str(token)

    async def remove_packages(self, scope: MachineScope) -> bool:
        """Delete: remove the packages, the last installed first. A person may skip this with
        an annotation, and an unreachable host is given up on after the Machine's
        ``hostCleanupTimeoutSeconds``; either is recorded in an Event."""
        if scope.package_version is None:
            return True
        if (scope.metadata.get("annotations") or {}).get(SKIP_HOST_CLEANUP) == "true":
            scope.event("Warning", "HostCleanupSkipped", f"{SKIP_HOST_CLEANUP} is set")
            return True
        try:
            executor = await self._connect(scope)
            if executor is None:
                return False
            for package in reversed(scope.desired_packages):
                installed = await self._check(scope, executor, [package])
                if installed is None:
                    return False
                removable = packages.scripts(package).get("remove")
                if installed[package["name"]] and removable:
                    change = Change(package, "remove")
                    if not await self._change(scope, executor, change, installed):
                        return False
        except HostUnreachable as e:
            timeout = scope.spec.get("hostCleanupTimeoutSeconds")
            if timeout is not None and scope.seconds_deleted() > float(timeout):
                message = f"packages left on the host, which is unreachable: {e}"
                scope.event("Warning", "HostCleanupSkipped", message)
                return True
            self._host_failed(scope, e)
            return False
        except HostError as e:
            self._host_failed(scope, e)
            return False
        return True

    async def forget(self, scope: MachineScope) -> None:
        """The Machine is gone: forget it, and close its connections to the host."""
        self._checked.forget(scope.uid)
        self._backoff.reset(scope.uid)
        executor = self._executors.get(scope.spec.get("executor", "ssh"))
        if executor is not None:
            await executor.forget(scope.key)

    # -- steps -------------------------------------------------------------------------------

    async def _connect(self, scope: MachineScope) -> Executor | None:
        """The executor and the host the steps run on, with the Machine's SSH credentials."""
        spec = scope.spec
        kind = spec.get("executor", "ssh")
        executor = self._executors.get(kind)
        if executor is None:
            enabled = ", ".join(sorted(self._executors)) or "none"
            message = (
                f"the {kind} executor is not enabled in this operator (enabled: {enabled}); "
                f"start it with --executors including {kind}"
            )
            scope.config_problem = ("ExecutorNotEnabled", message)
            scope.requeue(self._options.max_backoff)
            return None
        credentials = None
        if kind == "ssh":
            credentials = await self._credentials(scope)
            if credentials is None:
                return None
        scope.host = Host(scope.key, spec["address"], spec.get("port", 22), credentials)
        return executor

    async def _credentials(self, scope: MachineScope) -> Credentials | None:
        name = scope.spec["sshSecretRef"]["name"]
        try:
            secret = await self._client.get(SECRETS, name, namespace=scope.namespace)
        except NotFound:
            scope.host_problem = ("SecretNotFound", f"SSH Secret {name} not found")
            scope.requeue(self._options.retry_interval)
            return None
        except Forbidden:
            scope.host_problem = ("Forbidden", not_permitted(scope.namespace))
            scope.requeue(self._options.max_backoff)
            return None
        try:
            return Credentials.from_secret_data(secret.get("data") or {}, secret=name)
        except InvalidCredentials as e:
            scope.host_problem = (e.reason, str(e))
            scope.requeue(self._options.retry_interval)
            return None

    async def _run(
        self,
        scope: MachineScope,
        executor: Executor,
        package: Object,
        action: Action,
        *,
        reprovision: bool = False,
    ) -> StepResult:
        extra = dict(self._step_env(scope, package)) if self._step_env is not None else {}
        if reprovision:
            extra[packages.REPROVISION_ENV] = "true"
        step = packages.step(package, action, node_name=scope.name, extra_env=extra)
        if step is None or scope.host is None:
            raise RuntimeError(f"{package['name']} has no {action} step")  # a bug, not input
        return await executor.run(scope.host, step)

    async def _check(
        self, scope: MachineScope, executor: Executor, pkgs: list[Object]
    ) -> dict[str, str] | None:
        """What the host has: each package's check step (None if a check itself failed)."""
        installed: dict[str, str] = {}
        for package in pkgs:
            result = await self._run(scope, executor, package, "check")
            if not result.ok:
                message = f"{package['name']} check failed: {result.stderr_tail or 'no stderr'}"
                self._package_failed(scope, "CheckFailed", message)
                return None
            installed[package["name"]] = packages.reported_version(result.stdout)
        scope.host_problem = None
        return installed

    async def _change(
        self,
        scope: MachineScope,
        executor: Executor,
        change: Change,
        installed: dict[str, str],
        *,
        reprovision: bool = False,
    ) -> bool:
        """Run one change: record the intent, run it and verify, then check again
        (``reprovision``: the install step of a package that is there, told so)."""
        operation: Object = {
            "package": change.name,
            "step": change.action,
            "result": "Running",
            "startedAt": now(),
        }
        scope.status["lastOperation"] = operation
        scope.changing = change.name
        await scope.persist()  # the intent is in the API server before the host is touched
        failed_step = change.action
        result = await self._run(
            scope, executor, change.package, change.action, reprovision=reprovision
        )
        if result.ok and change.action != "remove" and "verify" in packages.scripts(change.package):
            failed_step = "verify"
            result = await self._run(scope, executor, change.package, "verify")
        check = await self._run(scope, executor, change.package, "check")
        installed[change.name] = packages.reported_version(check.stdout) if check.ok else ""
        want = "" if change.action == "remove" else change.package["version"]
        scope.changing = None
        if result.ok and check.ok and installed[change.name] == want:
            operation.update(result="Succeeded", finishedAt=now())
            self._backoff.reset(scope.uid)
            return True
        if not result.ok:
            stderr = result.stderr_tail or "no stderr"
            detail = f"{failed_step} exited {result.exit_status}: {stderr}"
        else:
            found = installed[change.name] or "nothing installed"
            detail = f"after {change.action}, check reports {found!r}, not {want or 'nothing'!r}"
        operation.update(
            result="Failed", finishedAt=now(), message=detail[-4096:], step=failed_step
        )
        self._package_failed(scope, "StepFailed", f"{change.name}: {detail}")
        return False

    def _package_failed(self, scope: MachineScope, reason: str, message: str) -> None:
        scope.packages_problem = (reason, message)
        scope.event("Warning", reason, message)
        scope.requeue(self._backoff.next(scope.uid))

    def _host_failed(self, scope: MachineScope, error: HostError) -> None:
        scope.host_problem = (error.reason, str(error))
        scope.event("Warning", error.reason, str(error))
        # A wrong host key needs a person: retry rarely. An unreachable host may come back.
        if isinstance(error, HostKeyMismatch):
            scope.requeue(self._options.max_backoff)
        else:
            scope.requeue(self._backoff.next(scope.uid))


def not_permitted(namespace: str) -> str:
    """Why Secrets of ``namespace`` cannot be read: the admin did not bind the operator's
    namespaced role there (config/rbac/machine-operator.yaml)."""
    return (
        f"the Machine-Operator may not read Secrets in namespace {namespace}: bind the "
        f"ClusterRole kokpit-machine-operator-namespaced there with a RoleBinding"
    )


def _checked_token(scope: MachineScope) -> tuple[int, str]:
    return (int(scope.metadata["generation"]), str(scope.spec["packageVersion"]))
