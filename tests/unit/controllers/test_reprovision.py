"""Reprovision: the rung's request to the Machine-Operator, the Machine-Operator serving it
once per token, and the workflow asking again (never twice) after a restart. The e2e test
(tests/e2e/controllers/test_reprovision.py) runs both operators as processes; these pin the
rules."""

from __future__ import annotations

import copy
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kokpit.api.conditions import get
from kokpit.api.v1alpha1.machine import REPROVISION_ANNOTATION
from kokpit.controllers.machine import status as machine_status
from kokpit.controllers.machine.host import HostPhases
from kokpit.controllers.machine.options import MachineOptions
from kokpit.controllers.machine.scope import MachineScope
from kokpit.controllers.remediation import status
from kokpit.controllers.remediation.phases import parse
from kokpit.providers.machine import Host, Step, StepResult, packages
from kokpit.providers.repair import RepairError, RepairTarget
from kokpit.providers.repair.reprovision import ReprovisionRepairer
from kokpit.runtime import Conflict, NotFound
from kokpit.runtime.store import Store
from tests.unit.controllers.test_machine_logic import fake_commands
from tests.unit.controllers.test_remediation_logic import (
    Harness,
    ago,
    fault,
    remediation,
)

Object = dict[str, Any]

# -- the workflow ------------------------------------------------------------------------------


class Recorder:
    """A repairer that records the targets it was given; ``repeatable`` as told."""

    def __init__(self, actions: set[str], repeatable: set[str], fail: RepairError | None = None):
        self.actions = frozenset(actions)
        self.repeatable = frozenset(repeatable)
        self.targets: list[RepairTarget] = []
        self._fail = fail

    async def repair(self, action: str, target: RepairTarget) -> str:
        self.targets.append(target)
        if self._fail is not None:
            raise self._fail
        return f"{action} done"


def harness(recorder: Recorder, ladder: list[Object]) -> tuple[Harness, Object]:
    h = Harness()
    h.workflow._repairers = {a: recorder for a in recorder.actions}
    return h, remediation(ladder=ladder)


async def test_a_started_reprovision_found_after_a_restart_is_asked_again_with_its_token() -> None:
    recorder = Recorder({"Reprovision"}, {"Reprovision"})
    h, obj = harness(recorder, [{"action": "Reprovision", "timeoutSeconds": 300}])
    started: Object = {"step": 0, "action": "Reprovision", "state": "Started", "startedAt": ago(5)}
    obj["status"]["attempts"] = [started]
    scope = h.scope(obj, fault_obj=fault())
    assert await h.workflow.repair(scope)
    [target] = recorder.targets
    assert target.attempt_id == f"u1/0/{started['startedAt']}"
    assert target.deadline == parse(started["startedAt"]) + timedelta(seconds=300)
    assert scope.phase == "Verifying"
    assert len(scope.attempts) == 1, "the same attempt, not a new one"
    assert scope.attempts[0]["message"] == "Reprovision done"
    assert [reason for _, reason, _ in scope.events] == ["RepairResumed"]


async def test_a_fresh_attempt_gives_its_repairer_the_policy_the_attempts_and_its_own_id() -> None:
    recorder = Recorder({"Ticket"}, set())
    ladder = [{"action": "Ticket", "timeoutSeconds": 60}]
    h, obj = harness(recorder, ladder)
    earlier = {"step": 0, "action": "Ticket", "state": "Failed", "startedAt": ago(90)}
    # A failed attempt at step 0 is history (resumed since): a new attempt starts.
    obj["status"]["attempts"] = [earlier]
    scope = h.scope(obj, fault_obj=fault())
    assert await h.workflow.repair(scope)
    [target] = recorder.targets
    assert target.policy["spec"]["escalationWebhook"] == {"url": "https://x"}
    assert [a["state"] for a in target.attempts] == ["Failed", "Started"]
    assert target.attempt_id == f"u1/0/{scope.attempts[-1]['startedAt']}"
    assert 55 < target.seconds_left() <= 60


async def test_a_started_action_that_is_not_repeatable_is_still_never_run_again() -> None:
    recorder = Recorder({"Reboot"}, set())
    h, obj = harness(recorder, [{"action": "Reboot", "timeoutSeconds": 300}])
    obj["status"]["attempts"] = [
        {"step": 0, "action": "Reboot", "state": "Started", "startedAt": ago(5)}
    ]
    scope = h.scope(obj, fault_obj=fault())
    assert await h.workflow.repair(scope)
    assert recorder.targets == []
    assert scope.phase == "Verifying"


async def test_a_failed_action_records_its_reason_and_the_repaired_condition_says_it() -> None:
    error = RepairError("BMC https://10.0.0.7 of Machine ns/m1 refused the login of user 'k'")
    error.reason = "BMCAuthFailed"
    recorder = Recorder({"PowerCycle"}, set(), fail=error)
    h, obj = harness(recorder, [{"action": "PowerCycle", "timeoutSeconds": 60}])
    scope = h.scope(obj, fault_obj=fault())
    assert await h.workflow.repair(scope)
    attempt = scope.attempts[-1]
    assert (attempt["state"], attempt["reason"]) == ("Failed", "BMCAuthFailed")
    status.update(scope)
    repaired = get(scope.status["conditions"], "Repaired") or {}
    assert (repaired["status"], repaired["reason"]) == ("False", "BMCAuthFailed")
    assert "https://10.0.0.7" in repaired["message"]
    # The ladder is exhausted: escalated, the Repaired condition keeps the failure's reason.
    assert not await h.workflow.repair(scope)
    status.update(scope)
    repaired = get(scope.status["conditions"], "Repaired") or {}
    assert (scope.phase, repaired["reason"]) == ("Escalated", "BMCAuthFailed")
    [message] = [m for _, r, m in scope.events if r == "RepairFailed"]
    assert "BMCAuthFailed" in message
    assert "https://10.0.0.7" in message


# -- the repairer ------------------------------------------------------------------------------


class Machines:
    """One Machine as the API server holds it, and a Machine-Operator that serves a request
    after ``serve_after`` reads (None: never)."""

    def __init__(self, machine: Object | None, serve_after: int | None = 1) -> None:
        self.machine = machine
        self.serve_after = serve_after
        self.patches: list[Object] = []
        self.reads = 0

    async def get(self, res: Any, name: str, *, namespace: str | None = None) -> Object:
        if self.machine is None:
            raise NotFound('machines "m1" not found')
        self.reads += 1
        annotations = self.machine["metadata"].get("annotations") or {}
        token = annotations.get(REPROVISION_ANNOTATION)
        if token and self.serve_after is not None and self.reads > self.serve_after:
            self.machine["status"]["reprovisioned"] = token
        return copy.deepcopy(self.machine)

    async def patch(
        self, res: Any, name: str, patch: Any, *, namespace: str | None = None
    ) -> Object:
        assert self.machine is not None
        version = patch["metadata"].pop("resourceVersion")
        if version != self.machine["metadata"].get("resourceVersion"):
            raise Conflict("the object has been modified")
        self.patches.append(patch)
        self.machine["metadata"].setdefault("annotations", {}).update(
            patch["metadata"]["annotations"]
        )
        return copy.deepcopy(self.machine)


def ready_machine(**status_fields: Any) -> Object:
    return {
        "metadata": {"name": "m1", "namespace": "ns", "resourceVersion": "1"},
        "spec": {"packageVersion": "v1"},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": ""}],
            **status_fields,
        },
    }


def reprovision_target(machine: Object, seconds: float = 30.0) -> RepairTarget:
    return RepairTarget(
        "ns",
        machine,
        "m1",
        "biz",
        "KernelDeadlock",
        "m1.kerneldeadlock",
        attempt_id="u1/0/2026-11-27T10:00:00Z",
        deadline=datetime.now(UTC) + timedelta(seconds=seconds),
    )


TOKEN = "u1/0/2026-11-27T10:00:00Z"


async def test_the_request_is_written_once_and_done_when_served_and_ready() -> None:
    machines = Machines(ready_machine(), serve_after=3)
    repairer = ReprovisionRepairer(machines, poll_interval=0.01)
    done = await repairer.repair("Reprovision", reprovision_target(ready_machine()))
    assert done == f"Reprovision: Machine m1 installed its packages again (request {TOKEN})"
    assert machines.patches == [{"metadata": {"annotations": {REPROVISION_ANNOTATION: TOKEN}}}]


async def test_a_request_served_already_is_not_written_again() -> None:
    served = ready_machine(reprovisioned=TOKEN)
    served["metadata"]["annotations"] = {REPROVISION_ANNOTATION: TOKEN}
    machines = Machines(served)
    repairer = ReprovisionRepairer(machines, poll_interval=0.01)
    await repairer.repair("Reprovision", reprovision_target(served))
    assert machines.patches == []


async def test_a_pending_request_of_another_attempt_is_served_before_ours_is_written() -> None:
    other = ready_machine(reprovisioned="old")
    other["metadata"]["annotations"] = {REPROVISION_ANNOTATION: "u2/0/2026-11-27T09:59:00Z"}
    machines = Machines(other, serve_after=None)
    repairer = ReprovisionRepairer(machines, poll_interval=0.01)
    with pytest.raises(RepairError) as late:
        await repairer.repair("Reprovision", reprovision_target(other, seconds=0.2))
    assert machines.patches == [], "another attempt's pending request is not overwritten"
    assert late.value.reason == "ReprovisionTimedOut"
    assert "another request (u2/0/2026-11-27T09:59:00Z) is still pending" in str(late.value)
    # Once it is served, ours goes out.
    machines.machine["status"]["reprovisioned"] = "u2/0/2026-11-27T09:59:00Z"  # type: ignore[index]
    machines.serve_after = machines.reads + 2
    await repairer.repair("Reprovision", reprovision_target(other))
    assert [p["metadata"]["annotations"][REPROVISION_ANNOTATION] for p in machines.patches] == [
        TOKEN
    ]


async def test_a_request_written_by_another_attempt_meanwhile_is_not_overwritten() -> None:
    machines = Machines(ready_machine(reprovisioned="old"), serve_after=None)

    class Racing(Machines):
        """Another attempt writes its request between our read and our write."""

        async def get(self, res: Any, name: str, *, namespace: str | None = None) -> Object:
            obj = await super().get(res, name, namespace=namespace)
            if self.reads == 1:
                assert self.machine is not None
                self.machine["metadata"]["annotations"] = {REPROVISION_ANNOTATION: "other"}
                self.machine["metadata"]["resourceVersion"] = "2"
            return obj

    racing = Racing(machines.machine, serve_after=None)
    repairer = ReprovisionRepairer(racing, poll_interval=0.01)
    with pytest.raises(RepairError) as late:
        await repairer.repair("Reprovision", reprovision_target(ready_machine(), seconds=0.2))
    assert racing.patches == []
    assert racing.machine is not None
    assert racing.machine["metadata"]["annotations"] == {REPROVISION_ANNOTATION: "other"}
    assert "another request (other) is still pending" in str(late.value)


async def test_a_request_not_served_in_time_fails_saying_what_the_machine_reports() -> None:
    machine = ready_machine()
    machine["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "PackagesNotInstalled", "message": "boom"}
    ]
    machines = Machines(machine, serve_after=None)
    repairer = ReprovisionRepairer(machines, poll_interval=0.01)
    with pytest.raises(RepairError) as late:
        await repairer.repair("Reprovision", reprovision_target(machine, seconds=0.1))
    assert late.value.reason == "ReprovisionTimedOut"
    assert "not done in time: the Machine-Operator has not served it" in str(late.value)
    assert "PackagesNotInstalled: boom" in str(late.value)
    assert len(machines.patches) == 1


async def test_a_machine_that_is_gone_fails_the_rung() -> None:
    repairer = ReprovisionRepairer(Machines(None), poll_interval=0.01)
    with pytest.raises(RepairError) as gone:
        await repairer.repair("Reprovision", reprovision_target(ready_machine()))
    assert gone.value.reason == "MachineNotFound"


# -- the Machine-Operator serving it -------------------------------------------------------


class Host1:
    """An executor whose packages are all installed at their versions; records each step."""

    def __init__(self, failing: str = "") -> None:
        self.steps: list[tuple[str, str, str]] = []
        self.failing = failing

    async def run(self, host: Host, step: Step) -> StepResult:
        self.steps.append((step.package, step.action, step.env.get("KOKPIT_REPROVISION", "")))
        if (step.package, step.action) == (self.failing, "install"):
            return StepResult(1, stderr="disk full")
        if step.action == "check":
            return StepResult(0, stdout=f"{step.version}\n")
        return StepResult(0)

    async def forget(self, machine: str) -> None:
        pass

    async def close(self) -> None:
        pass


def package(name: str) -> Object:
    script = {"check": {"run": "true"}, "install": {"run": "true"}}
    return {"name": name, "kind": "Other", "version": "1", "install": {"script": script}}


def machine_scope(annotation: str | None, served: str | None = None) -> MachineScope:
    obj: Object = {
        "metadata": {"name": "m1", "namespace": "ns", "uid": "m-uid", "generation": 1},
        "spec": {"packageVersion": "v1", "executor": "sim", "address": "10.0.0.1"},
        "status": {"packageVersion": "v1"},
    }
    if annotation is not None:
        obj["metadata"]["annotations"] = {REPROVISION_ANNOTATION: annotation}
    if served is not None:
        obj["status"]["reprovisioned"] = served
    scope = MachineScope(obj)
    scope.package_version = {"spec": {"packages": [package("a"), package("b")]}}
    return scope


async def serve(phases: HostPhases, scope: MachineScope, stored: list[Object]) -> bool:
    async def persist() -> None:
        machine_status.update(scope)
        stored.append(copy.deepcopy(scope.status))

    scope._persist = persist
    return await phases.reconcile_packages(scope)


async def test_the_machine_operator_installs_every_package_again_once_per_token() -> None:
    executor = Host1()
    phases = HostPhases(Store(), Store(), {"sim": executor}, MachineOptions())  # type: ignore[arg-type]
    stored: list[Object] = []
    scope = machine_scope(TOKEN)
    assert await serve(phases, scope, stored)
    installs = [(p, r) for p, a, r in executor.steps if a == "install"]
    assert installs == [("a", "true"), ("b", "true")], "installed again though checks pass"
    assert scope.status["reprovisioned"] == TOKEN
    assert stored[-1]["reprovisioned"] == TOKEN, "served is stored at once"
    # Before the last install, the token was not on record as served.
    assert all(s.get("reprovisioned") is None for s in stored[:-1])
    assert [r for _, r, _ in scope.events] == ["Reprovisioned"]

    # The same token again (a restarted requester writes it again): nothing runs.
    executor.steps.clear()
    again = machine_scope(TOKEN, served=TOKEN)
    assert await serve(phases, again, [])
    assert [a for _, a, _ in executor.steps if a == "install"] == []


async def test_a_reinstall_that_fails_leaves_the_request_unserved_and_the_machine_not_ready() -> (
    None
):
    executor = Host1(failing="b")
    phases = HostPhases(Store(), Store(), {"sim": executor}, MachineOptions())  # type: ignore[arg-type]
    scope = machine_scope(TOKEN)
    assert not await serve(phases, scope, [])
    assert "reprovisioned" not in scope.status
    machine_status.update(scope)
    installed = get(scope.status["conditions"], "PackagesInstalled") or {}
    assert (installed["status"], installed["reason"]) == ("False", "StepFailed")
    assert "b: install exited 1: disk full" in installed["message"]
    assert (get(scope.status["conditions"], "Ready") or {}).get("status") == "False"
    # The next reconcile (its backoff) serves it from the first package again.
    executor.failing = ""
    executor.steps.clear()
    assert await serve(phases, scope, [])
    assert [p for p, a, _ in executor.steps if a == "install"] == ["a", "b"]
    assert scope.status["reprovisioned"] == TOKEN


async def test_a_token_too_long_is_refused_with_an_event_and_never_served() -> None:
    executor = Host1()
    phases = HostPhases(Store(), Store(), {"sim": executor}, MachineOptions())  # type: ignore[arg-type]
    scope = machine_scope("x" * 300)
    assert await serve(phases, scope, [])
    assert [a for _, a, _ in executor.steps if a == "install"] == []
    assert "reprovisioned" not in scope.status
    assert [r for _, r, _ in scope.events] == ["InvalidReprovisionRequest"]


def test_the_apt_helper_reinstalls_when_it_re_provisions(tmp_path: Path) -> None:
    package: Object = {
        "name": "containerd",
        "kind": "ContainerRuntime",
        "version": "1.6.20~ds1-1",
        "install": {"apt": {"package": "containerd"}},
    }
    path, log = fake_commands(tmp_path, "apt-get")
    step = packages.step(package, "install", node_name="n1")
    assert step is not None

    def install(extra: dict[str, str]) -> list[str]:
        log.unlink(missing_ok=True)
        env = {**step.env, "KOKPIT_ROOT": str(tmp_path), "PATH": path, **extra}
        done = subprocess.run(["/bin/sh", "-euc", step.script], env=env, check=False)
        assert done.returncode == 0
        return log.read_text().splitlines()

    assert "--reinstall" not in install({})
    argv = install({packages.REPROVISION_ENV: "true"})
    assert argv[argv.index("--reinstall") + 1 :] == ["install", "--", "containerd=1.6.20~ds1-1"]
