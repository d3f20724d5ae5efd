"""The Remediation workflow's logic without a cluster: choosing a policy, the storm stop's
arithmetic, recovery, conditions, and the phase handlers around the repair ladder (with a fake
repairer and notifier, and the scope's persist recorded, so a test sees what was stored before
each action ran)."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kokpit.api.conditions import get
from kokpit.api.v1alpha1.remediation import COMMAND_ANNOTATION, CORDONED_BY
from kokpit.api.v1alpha1.selector import matches
from kokpit.cli.main import parser
from kokpit.cli.remediation import table
from kokpit.controllers.remediation import metrics, status
from kokpit.controllers.remediation.commands import Commands
from kokpit.controllers.remediation.options import RemediationOptions
from kokpit.controllers.remediation.phases import Workflow, recovery
from kokpit.controllers.remediation.scope import RemediationScope
from kokpit.controllers.remediation.selection import choose_policy
from kokpit.controllers.remediation.start import became_active_at, initial_status
from kokpit.controllers.remediation.storm import (
    Health,
    Scope,
    healths,
    node_summary,
    scope_of,
)
from kokpit.providers.guard import Outcome, RiskRequest, Verdict
from kokpit.providers.repair import RepairError, RepairTarget
from kokpit.providers.repair.notify import Escalation
from kokpit.runtime import Conflict, Store

Object = dict[str, Any]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(seconds: float) -> str:
    return stamp(datetime.now(UTC) - timedelta(seconds=seconds))


# -- choosing a policy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"rack": "a"}}, {"rack": "a", "x": "y"}, True),
        ({"matchLabels": {"rack": "a"}}, {"rack": "b"}, False),
        ({"matchExpressions": [{"key": "rack", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "rack", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"gpu": ""}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {"gpu": ""}, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "Bogus"}]}, {"gpu": ""}, False),
    ],
)
def test_label_selectors_match_as_kubernetes_does(
    selector: Object, labels: dict[str, str], expected: bool
) -> None:
    assert matches(selector, labels) is expected


def policy(name: str, types: list[str], selector: Object | None = None, **spec: Any) -> Object:
    return {
        "metadata": {"name": name, "namespace": "ns", "generation": 1, "resourceVersion": "1"},
        "spec": {
            "machineSelector": selector or {},
            "faultTypes": types,
            "steps": [{"action": "RestartKubelet", "timeoutSeconds": 30}],
            **spec,
        },
    }


def machine(name: str = "m1", labels: dict[str, str] | None = None) -> Object:
    return {
        "metadata": {"name": name, "namespace": "ns", "labels": labels or {}},
        "spec": {"clusterRef": {"name": "biz"}, "packageVersion": "pv", "executor": "sim"},
        "status": {"nodeName": name},
    }


def test_the_policy_whose_name_sorts_first_takes_a_fault_several_select() -> None:
    gpu = {"matchLabels": {"gpu": "yes"}}
    policies = [
        policy("zz-all", ["KernelDeadlock"]),
        policy("aa-gpu", ["KernelDeadlock"], gpu),
        policy("00-disk", ["DiskFailure"]),
    ]
    chosen = choose_policy(policies, machine(labels={"gpu": "yes"}), "KernelDeadlock")
    assert chosen is not None
    assert chosen["metadata"]["name"] == "aa-gpu"
    chosen = choose_policy(policies, machine(), "KernelDeadlock")
    assert chosen is not None
    assert chosen["metadata"]["name"] == "zz-all"
    assert choose_policy(policies, machine(), "NICFailure") is None


def fault(state: str = "Active", history: list[Object] | None = None) -> Object:
    return {
        "metadata": {"name": "m1.kerneldeadlock", "namespace": "ns", "resourceVersion": "5"},
        "spec": {"machineRef": {"name": "m1"}, "type": "KernelDeadlock"},
        "status": {"state": state, "history": history or [], "firstSeen": stamp(T0)},
    }


def test_a_new_remediation_snapshots_the_ladder_and_where_the_node_is() -> None:
    p = policy("p", ["KernelDeadlock"])
    got = initial_status(fault(), machine(), p)
    assert got["phase"] == "Pending"
    assert (got["nodeName"], got["clusterName"], got["faultType"]) == (
        "m1",
        "biz",
        "KernelDeadlock",
    )
    assert got["ladder"] == p["spec"]["steps"]
    assert got["ladder"] is not p["spec"]["steps"]


def test_a_fault_became_active_at_its_last_active_transition() -> None:
    history = [
        {"state": "Active", "time": stamp(T0)},
        {"state": "Cleared", "time": stamp(T0 + timedelta(seconds=5))},
        {"state": "Active", "time": stamp(T0 + timedelta(seconds=9))},
    ]
    assert became_active_at(fault(history=history)) == stamp(T0 + timedelta(seconds=9))
    assert became_active_at(fault()) == stamp(T0)


# -- the storm stop -------------------------------------------------------------------------


def node(name: str, ready: bool = True, labels: dict[str, str] | None = None) -> Object:
    return node_summary(
        {
            "metadata": {"name": name, "labels": labels or {}, "resourceVersion": "1"},
            "spec": {},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {
                        "type": "Ready",
                        "status": "True" if ready else "False",
                        "lastTransitionTime": stamp(T0),
                        "lastHeartbeatTime": "changes all the time",
                    },
                ]
            },
        }
    )


def test_forty_percent_of_a_clusters_nodes_faulty_is_below_seventy_percent_healthy() -> None:
    nodes = [node(f"n{i}") for i in range(5)]
    verdict = healths("ns/biz", nodes, {"n0", "n1"}, None)[Scope("ns/biz")]
    assert (verdict.healthy, verdict.total) == (3, 5)
    assert verdict.below(70)
    assert not verdict.below(60)
    assert verdict.describe(70) == "Cluster ns/biz: 3 of 5 nodes healthy (60%, below 70%)"
    one = healths("ns/biz", nodes, {"n0"}, None)[Scope("ns/biz")]
    assert not one.below(70)  # one fault of five: 80 % healthy, the remediation starts


def test_not_ready_nodes_are_unhealthy_and_a_failure_domain_counts_its_own_nodes() -> None:
    nodes = [
        node("a1", labels={"zone": "a"}),
        node("a2", ready=False, labels={"zone": "a"}),
        node("b1", labels={"zone": "b"}),
        node("b2", labels={"zone": "b"}),
    ]
    zone_a = scope_of("ns/biz", nodes[0], "zone")
    assert str(zone_a) == "zone=a in Cluster ns/biz"
    by_zone = healths("ns/biz", nodes, set(), "zone")
    assert (by_zone[zone_a].healthy, by_zone[zone_a].total) == (1, 2)
    zone_b = scope_of("ns/biz", nodes[2], "zone")
    assert not healths("ns/biz", nodes, {"a1"}, "zone")[zone_b].below(100)
    assert healths("ns/biz", [], set(), None) == {}  # no nodes known: no scope to stop
    assert Health(Scope("ns/biz"), 0).percent == 100.0


def health(scope: Scope, nodes: list[Object], faulty: set[str]) -> Health:
    """One scope's health, counted on its own: its nodes, Ready and not faulty."""
    members = [n for n in nodes if scope_of(scope.cluster, n, scope.label) == scope]
    unhealthy = frozenset(
        n["metadata"]["name"]
        for n in members
        if n["status"]["conditions"][0]["status"] != "True" or n["metadata"]["name"] in faulty
    )
    return Health(scope, len(members), unhealthy)


def test_every_scope_counted_in_one_pass_is_what_each_counted_alone_is() -> None:
    nodes = [
        node(f"{zone}{i}", ready=i != 1, labels={"zone": zone} if zone != "x" else {})
        for zone in ("a", "b", "x")
        for i in range(4)
    ]
    faulty = {"a0", "b2", "x3"}
    for label in ("zone", None):
        together = healths("ns/biz", nodes, faulty, label)
        scopes = {scope_of("ns/biz", n, label) for n in nodes}
        assert set(together) == scopes
        for scope in scopes:
            assert together[scope] == health(scope, nodes, faulty)


def test_a_node_that_reports_a_fault_condition_is_unhealthy_before_the_hub_records_it() -> None:
    reporting = node_summary(
        {
            "metadata": {"name": "n1"},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": stamp(T0)},
                    {"type": "KernelDeadlock", "status": "True", "lastHeartbeatTime": "x"},
                    {"type": "ReadonlyFilesystem", "status": "False"},
                ]
            },
        }
    )
    assert [c["type"] for c in reporting["status"]["conditions"]] == ["Ready", "KernelDeadlock"]
    together = healths("ns/biz", [reporting, node("n2")], set(), None)[Scope("ns/biz")]
    assert (together.healthy, together.total) == (1, 2)


def test_the_node_summary_keeps_labels_cordon_and_readiness_without_heartbeats() -> None:
    summary = node("n1", labels={"zone": "a"})
    assert summary["metadata"]["labels"] == {"zone": "a"}
    assert summary["spec"] == {"unschedulable": False}
    assert summary["status"]["conditions"] == [
        {"type": "Ready", "status": "True", "lastTransitionTime": stamp(T0)}
    ]


# -- recovery ---------------------------------------------------------------------------------


def cleared_at(at: datetime) -> Object:
    return fault("Cleared", [{"state": "Cleared", "time": stamp(at)}])


def test_recovery_counts_from_the_latest_of_clearing_readiness_and_the_attempt() -> None:
    ready = node("m1")  # Ready since T0
    started = stamp(T0 + timedelta(seconds=10))
    at = T0 + timedelta(seconds=40)
    assert recovery(fault("Active"), ready, started, 60, at) is None
    assert recovery(cleared_at(T0), node("m1", ready=False), started, 60, at) is None
    # cleared at T0, Ready since T0, attempt at T0+10: 30 s of 60 held.
    assert recovery(cleared_at(T0), ready, started, 60, at) == 30.0
    # cleared later than the attempt: counted from the clearing.
    assert recovery(cleared_at(T0 + timedelta(seconds=30)), ready, started, 60, at) == 50.0
    assert recovery(cleared_at(T0), ready, started, 0, at) == 0.0
    assert recovery(None, ready, started, 20, at) == 0.0  # a fault that is gone is cleared


# -- the handlers -------------------------------------------------------------------------------


class FakeRepairer:
    """Does nothing but remember what the Remediation's stored status said when it was
    called, and fail when told to."""

    actions = frozenset({"RestartKubelet", "Reboot"})
    repeatable: frozenset[str] = frozenset()

    def __init__(self, stored: list[Object], fail: set[str] | None = None) -> None:
        self.calls: list[tuple[str, Object]] = []
        self._stored = stored
        self._fail = fail or set()

    async def repair(self, action: str, target: RepairTarget) -> str:
        self.calls.append((action, copy.deepcopy(self._stored[-1])))
        if action in self._fail:
            raise RepairError(f"{action} refused by the host")
        return f"{action} done"


class FakeNotifier:
    def __init__(self) -> None:
        self.escalations: list[Escalation] = []

    async def escalated(self, escalation: Escalation) -> None:
        self.escalations.append(escalation)


class Writes:
    """Stands in for the client where a handler writes another object (the NodeFault's
    Remediated condition): records the patches."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, Object]] = []

    async def patch(self, resource: Any, name: str, body: Object, **kw: Any) -> Object:
        self.patches.append((name, body))
        return body


class FakeInformer:
    def __init__(self, nodes: list[Object]) -> None:
        self.store = Store()
        for n in nodes:
            self.store.upsert(n)
        self.synced = asyncio.Event()
        self.synced.set()


class FakeClusters:
    """The cluster cache as the workflow reads it: a synced Node informer, and the business
    cluster's client (recording its writes)."""

    def __init__(self, nodes: list[Object], client: Writes) -> None:
        self.nodes = FakeInformer(nodes)
        self.client = client

    async def get(self, key: str) -> FakeClusters:
        return self

    def informer(self, resource: Any, **kw: Any) -> FakeInformer:
        return self.nodes


LADDER = [
    {"action": "RestartKubelet", "timeoutSeconds": 30},
    {"action": "Reboot", "timeoutSeconds": 60},
]


def remediation(**status_fields: Any) -> Object:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Remediation",
        "metadata": {"name": "m1.kerneldeadlock", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {
            "faultRef": {"name": "m1.kerneldeadlock"},
            "machineRef": {"name": "m1"},
            "policyRef": {"name": "p"},
        },
        "status": {
            "phase": "Repairing",
            "nodeName": "m1",
            "clusterName": "biz",
            "faultType": "KernelDeadlock",
            "ladder": LADDER,
            "step": 0,
            "cordoned": True,
            **status_fields,
        },
    }


class RecordingGuard:
    """A guard that refuses the actions it is told to and remembers every ask and report (the
    guard itself is tested against the API server in tests/e2e/providers/test_guard.py)."""

    def __init__(self, deny: set[str]) -> None:
        self.deny = deny
        self.asked: list[RiskRequest] = []
        self.released: list[tuple[RiskRequest, str]] = []

    async def acquire(self, request: RiskRequest) -> Verdict:
        self.asked.append(request)
        if request.action in self.deny:
            return Verdict(False, "RiskPolicy reboots: 5 of 5 grants in the last 600s", 42.0)
        return Verdict(True, "within budget")

    async def assess(self, request: RiskRequest) -> Verdict:
        raise AssertionError("the workflow never asks for a dry run")

    async def release(self, request: RiskRequest, outcome: Outcome) -> None:
        self.released.append((request, outcome))


class Harness:
    def __init__(
        self,
        fail: set[str] | None = None,
        nodes: list[Object] | None = None,
        guard: RecordingGuard | None = None,
    ) -> None:
        self.stored: list[Object] = [{}]
        #: The annotations the object had at each persist.
        self.annotations: list[dict[str, str]] = []
        self.repairer = FakeRepairer(self.stored, fail)
        self.notifier = FakeNotifier()
        self.writes = Writes()
        #: The business cluster's writes (the cordon, the uncordon).
        self.business = Writes()
        self.clusters = FakeClusters(nodes or [node("m1")], self.business)
        self.workflow = Workflow(
            client=self.writes,  # type: ignore[arg-type]
            clusters=self.clusters,  # type: ignore[arg-type]
            faults=Store(),
            machines=Store(),
            policies=Store(),
            cluster_objects=Store(),
            repairers={a: self.repairer for a in FakeRepairer.actions},
            notifier=self.notifier,
            options=RemediationOptions(),
            guard=guard,
        )

    def scope(self, obj: Object, *, fault_obj: Object | None = None) -> RemediationScope:
        scope = RemediationScope(obj)
        scope.machine = machine()
        scope.policy = policy(
            "p", ["KernelDeadlock"], recoverySeconds=0, escalationWebhook={"url": "https://x"}
        )
        scope.fault = fault_obj

        async def persist() -> None:
            status.update(scope)
            self.stored.append(copy.deepcopy(scope.status))
            self.annotations.append(dict(scope.metadata.get("annotations") or {}))

        scope._persist = persist
        return scope


async def test_an_attempt_is_stored_as_started_before_its_action_runs() -> None:
    h = Harness()
    scope = h.scope(remediation(), fault_obj=fault())
    assert await h.workflow.repair(scope)
    [(action, stored)] = h.repairer.calls
    assert action == "RestartKubelet"
    assert stored["attempts"][-1]["state"] == "Started"  # what the API server held meanwhile
    assert stored["attempts"][-1]["action"] == "RestartKubelet"
    assert scope.phase == "Verifying"
    assert scope.attempts[-1]["message"] == "RestartKubelet done"


async def test_a_started_attempt_found_after_a_restart_is_never_run_again() -> None:
    h = Harness()
    started = {"step": 1, "action": "Reboot", "state": "Started", "startedAt": ago(5)}
    scope = h.scope(remediation(step=1, attempts=[started]), fault_obj=fault())
    assert await h.workflow.repair(scope)
    assert h.repairer.calls == []
    assert scope.phase == "Verifying"
    assert scope.attempts == [started]
    # ... and verifying waits out the rung's timeout for the node to recover.
    assert not await h.workflow.verify(scope)
    assert scope.phase == "Verifying"
    assert scope.requeue_after is not None


async def test_a_failing_action_climbs_to_the_next_rung_and_the_ladder_ends_escalated() -> None:
    h = Harness(fail={"RestartKubelet", "Reboot"})
    scope = h.scope(remediation(), fault_obj=fault())
    before = metrics.ESCALATIONS.labels("ns", "p")._value.get()
    assert await h.workflow.repair(scope)
    assert (scope.phase, scope.step, scope.attempts[-1]["state"]) == ("Repairing", 1, "Failed")
    assert await h.workflow.repair(scope)
    assert (scope.phase, scope.step) == ("Repairing", 2)
    assert not await h.workflow.repair(scope)  # nothing left: Escalated, and it stays so
    assert scope.phase == "Escalated"
    assert [a for a, _ in h.repairer.calls] == ["RestartKubelet", "Reboot"]
    assert metrics.ESCALATIONS.labels("ns", "p")._value.get() == before + 1
    [escalation] = h.notifier.escalations
    assert (escalation.remediation, escalation.node_name) == ("m1.kerneldeadlock", "m1")
    assert [a["action"] for a in escalation.attempts] == ["RestartKubelet", "Reboot"]
    assert h.stored[-1]["phase"] == "Escalated"  # stored before people are told
    status.update(scope)
    conditions = scope.status["conditions"]
    assert get(conditions, "Escalated")["status"] == "True"  # type: ignore[index]
    assert get(conditions, "Cordoned")["reason"] == "CordonedByKokpit"  # type: ignore[index]
    reasons = [reason for _, reason, _ in scope.events]
    assert reasons.count("RepairFailed") == 2
    assert "Escalated" in reasons
    [(name, patch)] = h.writes.patches
    remediated = get(patch["status"]["conditions"], "Remediated")
    assert name == "m1.kerneldeadlock"
    assert remediated is not None
    assert (remediated["status"], remediated["reason"]) == ("False", "Escalated")


async def test_a_rung_not_recovered_within_its_timeout_is_timed_out_and_the_next_is_tried() -> None:
    h = Harness()
    started = {"step": 0, "action": "RestartKubelet", "state": "Started", "startedAt": ago(31)}
    scope = h.scope(remediation(phase="Verifying", attempts=[started]), fault_obj=fault())
    assert await h.workflow.verify(scope)
    assert (scope.phase, scope.step, scope.attempts[-1]["state"]) == ("Repairing", 1, "TimedOut")


async def test_a_cleared_fault_on_a_ready_node_is_recovered_and_goes_to_uncordoning() -> None:
    h = Harness()
    started = {"step": 0, "action": "RestartKubelet", "state": "Started", "startedAt": ago(3)}
    cleared = fault("Cleared", [{"state": "Cleared", "time": ago(2)}])
    scope = h.scope(remediation(phase="Verifying", attempts=[started]), fault_obj=cleared)
    assert await h.workflow.verify(scope)
    assert (scope.phase, scope.attempts[-1]["state"]) == ("Uncordoning", "Succeeded")
    # Cleared, but the node is not Ready: still waiting.
    h = Harness(nodes=[node("m1", ready=False)])
    scope = h.scope(remediation(phase="Verifying", attempts=[dict(started)]), fault_obj=cleared)
    assert not await h.workflow.verify(scope)
    assert scope.phase == "Verifying"


async def test_resume_restarts_the_ladder_and_is_stored_before_the_command_is_removed() -> None:
    h = Harness()
    started = {"step": 1, "action": "Reboot", "state": "Started", "startedAt": ago(5)}
    obj = remediation(phase="Escalated", step=2, attempts=[started])
    obj["metadata"]["annotations"] = {COMMAND_ANNOTATION: "resume"}
    scope = h.scope(obj, fault_obj=fault())
    assert await Commands(h.workflow).apply(scope)
    assert h.stored[-1]["phase"] == "Cordoning"
    assert h.stored[-1]["step"] == 0
    assert h.stored[-1]["attempts"][-1]["state"] == "Failed"  # rung 1 may run anew
    assert COMMAND_ANNOTATION in h.annotations[-1]  # the effect was stored first ...
    assert COMMAND_ANNOTATION not in obj["metadata"]["annotations"]  # ... then it goes
    status.update(scope)
    escalated = get(scope.status["conditions"], "Escalated")
    assert escalated is None or escalated["status"] == "False"


async def test_unknown_commands_and_commands_to_finished_remediations_are_refused() -> None:
    for phase, command, reason in [
        ("Escalated", "reboot-now", "UnknownCommand"),
        ("Succeeded", "resume", "CommandRefused"),
        ("Pending", "resume", "CommandRefused"),
    ]:
        h = Harness()
        obj = remediation(phase=phase)
        obj["metadata"]["annotations"] = {COMMAND_ANNOTATION: command}
        scope = h.scope(obj, fault_obj=fault())
        assert await Commands(h.workflow).apply(scope)
        assert scope.phase == phase
        assert [r for _, r, _ in scope.events] == [reason]
        assert COMMAND_ANNOTATION not in obj["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("Pending", {}),
        ("Cordoning", {"Cordoned": "False"}),
        ("Draining", {"Cordoned": "True", "Drained": "False"}),
        ("Verifying", {"Cordoned": "True", "Drained": "True", "Repaired": "False"}),
        ("Succeeded", {"Cordoned": "False", "Drained": "True", "Repaired": "True"}),
        (
            "Escalated",
            {"Cordoned": "True", "Drained": "True", "Repaired": "False", "Escalated": "True"},
        ),
    ],
)
def test_conditions_follow_the_phase(phase: str, expected: dict[str, str]) -> None:
    scope = RemediationScope(remediation(phase=phase))
    status.update(scope)
    got = {c["type"]: c["status"] for c in scope.status.get("conditions") or []}
    assert got == expected


# -- the CLI ----------------------------------------------------------------------------------


def test_kokpit_remediation_parses_its_commands_and_lists_remediations_as_a_table() -> None:
    args = parser().parse_args(["remediation", "close", "m1.kerneldeadlock", "-n", "fleet"])
    assert (args.command, args.name, args.namespace) == ("close", "m1.kerneldeadlock", "fleet")
    with pytest.raises(SystemExit):
        parser().parse_args(["remediation", "reboot", "m1.kerneldeadlock"])
    escalated = remediation(
        phase="Escalated",
        step=2,
        attempts=[{"step": 1, "action": "Reboot", "state": "TimedOut", "startedAt": ago(9)}],
    )
    lines = table([escalated, remediation(phase="Pending")]).splitlines()
    assert lines[0].split() == [
        "NAMESPACE",
        "NAME",
        "MACHINE",
        "FAULT",
        "PHASE",
        "STEP",
        "LAST",
        "ACTION",
    ]
    assert lines[1].split() == [
        "ns",
        "m1.kerneldeadlock",
        "m1",
        "KernelDeadlock",
        "Escalated",
        "2",
        "Reboot",
        "TimedOut",
    ]
    assert lines[2].split()[-3:] == ["Pending", "0", "-"]


# -- the guard ------------------------------------------------------------------------------


async def test_a_reboot_the_guard_refuses_is_not_started_and_says_why() -> None:
    guard = RecordingGuard(deny={"Reboot"})
    h = Harness(guard=guard)
    scope = h.scope(remediation(step=1), fault_obj=fault())
    assert not await h.workflow.repair(scope)
    assert h.repairer.calls == []
    assert scope.attempts == []  # nothing recorded: the rung is asked for again later
    assert scope.phase == "Repairing"
    assert scope.requeue_after == 10.0  # the policy's 42 s, within the retry interval
    status.update(scope)
    repaired = get(scope.status["conditions"], "Repaired")
    assert repaired is not None
    assert repaired["reason"] == "GuardDenied"
    assert "Reboot of node m1 waits: RiskPolicy reboots: 5 of 5 grants" in repaired["message"]
    [request] = guard.asked
    assert (request.action, request.id) == ("Reboot", "u1/rung-1/try-0")
    assert request.target == "Machine ns/m1"
    assert request.cluster == "ns/biz"


async def test_an_allowed_reboot_is_asked_with_a_key_a_restart_repeats_and_reported_once_done() -> (
    None
):
    guard = RecordingGuard(deny=set())
    h = Harness(fail={"Reboot"}, guard=guard)
    # Soft repairs do not ask.
    scope = h.scope(remediation(), fault_obj=fault())
    assert await h.workflow.repair(scope)
    assert guard.asked == []
    # A restart between the ask and the record asks with the same key.
    first = h.scope(remediation(step=1), fault_obj=fault())
    again = h.scope(remediation(step=1), fault_obj=fault())
    await h.workflow._allowed(first, h.workflow._repair_request(first, 1, None))
    assert await h.workflow.repair(again)
    assert [r.id for r in guard.asked] == ["u1/rung-1/try-0", "u1/rung-1/try-0"]
    # The reboot failed: reported as failed, under the key it was granted with.
    [(request, outcome)] = guard.released
    assert (request.id, outcome) == ("u1/rung-1/try-0", "Failed")
    assert again.attempts[-1]["state"] == "Failed"


async def test_taking_the_node_out_of_service_asks_for_drain_and_escalation_reports_it() -> None:
    guard = RecordingGuard(deny={"Drain"})
    h = Harness(guard=guard)
    scope = h.scope(remediation(phase="Cordoning", cordoned=False), fault_obj=fault())
    scope.obj["status"].pop("drain", None)
    h.workflow._node = _fresh_node  # type: ignore[method-assign]
    assert not await h.workflow.cordon(scope)
    assert scope.phase == "Cordoning"
    assert [r.action for r in guard.asked] == ["Drain"]
    guard.deny.clear()
    assert await h.workflow.cordon(scope)
    assert scope.phase == "Draining"
    # The ladder exhausted: the drain is reported failed (the node stays cordoned).
    scope.status.update(phase="Repairing", step=len(LADDER))
    assert not await h.workflow.repair(scope)
    assert [(r.id, o) for r, o in guard.released] == [("u1/drain", "Failed")]


async def _fresh_node(scope: RemediationScope, **kw: Any) -> tuple[Any, Object]:
    """The business cluster's client and a schedulable node, as a fresh read gives them."""
    return Writes(), node("m1")


# -- one pass of the workflow: what it stores, and when it gives the worker back ---------------


MARK = {CORDONED_BY: "ns/m1.kerneldeadlock/u1"}


async def test_a_pass_ends_after_the_cordon_made_in_one_conditional_write_that_marks_it() -> None:
    """A burst of admitted remediations is taken out of service first: the pass that cordons
    ends there (Draining, to go on at once in a later pass). The cordon is one request, from
    the cache's view of the node: it marks the node as this remediation's, and holds only if
    the node is still as read."""
    h = Harness()
    scope = h.scope(remediation(phase="Cordoning", cordoned=False), fault_obj=fault())
    assert await h.workflow.advance(scope)
    assert h.business.patches == [
        (
            "m1",
            {
                "metadata": {"resourceVersion": "1", "annotations": MARK},
                "spec": {"unschedulable": True},
            },
        )
    ]
    assert h.stored == [{}], "nothing stored before the cordon: the mark is the record"
    assert scope.status["cordoned"] is True
    assert scope.phase == "Draining"
    assert scope.requeue_after == 0.0
    assert "attempts" not in scope.status, "no drain or repair in the pass that cordons"


def cordoned_node(mark: dict[str, str] | None) -> Object:
    cordoned = copy.deepcopy(node("m1"))
    cordoned["spec"]["unschedulable"] = True
    if mark is not None:
        cordoned["metadata"]["annotations"] = dict(mark)
    return cordoned


async def test_a_restart_after_the_cordon_knows_from_the_mark_that_kokpit_cordoned() -> None:
    h = Harness(nodes=[cordoned_node(MARK)])
    h.workflow._node = fresh(cordoned_node(MARK))  # type: ignore[method-assign]
    scope = h.scope(remediation(phase="Cordoning", cordoned=False), fault_obj=fault())
    assert await h.workflow.cordon(scope)
    assert h.business.patches == []
    assert scope.status["cordoned"] is True


async def test_a_mark_left_on_a_node_a_person_uncordoned_does_not_count() -> None:
    uncordoned = node("m1")
    uncordoned["metadata"]["annotations"] = dict(MARK)
    h = Harness(nodes=[uncordoned])
    scope = h.scope(remediation(phase="Cordoning", cordoned=False), fault_obj=fault())
    assert await h.workflow.cordon(scope)
    assert [body["spec"] for _, body in h.business.patches] == [{"unschedulable": True}]
    assert scope.status["cordoned"] is True


async def test_a_node_someone_else_cordoned_is_not_kokpits_even_if_the_cache_says_otherwise() -> (
    None
):
    """The cache still shows the node schedulable; the conditional cordon finds it changed,
    and the fresh read shows a person's cordon (no mark): kokpit leaves it theirs."""
    h = Harness()
    person = cordoned_node({CORDONED_BY: "ns/m1.kerneldeadlock/an-older-one"})

    async def conflict(resource: Any, name: str, body: Object, **kw: Any) -> Object:
        raise Conflict("the object has been modified")

    h.business.patch = conflict  # type: ignore[method-assign]
    h.workflow._node = fresh(person)  # type: ignore[method-assign]
    scope = h.scope(remediation(phase="Cordoning", cordoned=False), fault_obj=fault())
    assert await h.workflow.cordon(scope)
    assert scope.status["cordoned"] is False
    assert scope.phase == "Draining"
    assert [e[1] for e in scope.events] == ["Cordoned"]
    assert "was cordoned already" in scope.events[0][2]


async def test_closing_a_remediation_stopped_right_after_its_cordon_gives_the_node_back() -> None:
    """Killed between the cordon and the status write, then closed: the status does not say
    cordoned yet, the node's mark does."""
    h = Harness()
    h.workflow._node = fresh(cordoned_node(MARK), h.business)  # type: ignore[method-assign]
    scope = h.scope(remediation(phase="Cordoning", cordoned=False), fault_obj=fault())
    assert await h.workflow.close(scope)
    assert h.business.patches == [("m1", UNCORDON)]
    assert scope.phase == "Closed"


#: The uncordon of a node as read at resourceVersion 1: it takes kokpit's mark off too.
UNCORDON = {
    "metadata": {"resourceVersion": "1", "annotations": {CORDONED_BY: None}},
    "spec": {"unschedulable": None},
}


async def test_the_uncordon_is_one_write_conditional_on_the_node_carrying_the_mark() -> None:
    h = Harness(nodes=[cordoned_node(MARK)])
    scope = h.scope(remediation(phase="Uncordoning"), fault_obj=cleared_at(T0))
    assert await h.workflow.uncordon(scope)
    assert h.business.patches == [("m1", UNCORDON)]
    assert scope.status["cordoned"] is False
    assert [e[1] for e in scope.events][:1] == ["Uncordoned"]


@pytest.mark.parametrize(
    "mark",
    [
        None,  # after kokpit's uncordon (a crash before its status write), a person cordoned it
        {CORDONED_BY: "ns/m1.kerneldeadlock/u2"},  # another remediation of the node cordoned it
    ],
)
async def test_a_cordon_without_this_remediations_mark_is_never_lifted(
    mark: dict[str, str] | None,
) -> None:
    """The status says kokpit cordoned the node, but the node does not carry this
    remediation's mark, in the cache nor when read fresh: the cordon is someone else's now."""
    h = Harness(nodes=[cordoned_node(mark)])
    h.workflow._node = fresh(cordoned_node(mark), h.business)  # type: ignore[method-assign]
    scope = h.scope(remediation(phase="Uncordoning"), fault_obj=cleared_at(T0))
    assert await h.workflow.uncordon(scope)
    assert h.business.patches == []
    assert scope.status["cordoned"] is False
    assert scope.phase == "Succeeded"
    assert "LeftCordoned" in [e[1] for e in scope.events]


async def test_an_uncordon_the_cache_cannot_confirm_reads_the_node_first() -> None:
    """The cache has not seen the cordon's mark yet (the remediation ends right after its
    cordon): the fresh read has it, and the node is given back."""
    h = Harness(nodes=[node("m1")])
    h.workflow._node = fresh(cordoned_node(MARK), h.business)  # type: ignore[method-assign]
    scope = h.scope(remediation(phase="Uncordoning"), fault_obj=cleared_at(T0))
    assert await h.workflow.uncordon(scope)
    assert h.business.patches == [("m1", UNCORDON)]


def fresh(obj: Object, client: Writes | None = None) -> Any:
    """Stands in for the workflow's fresh read of the node (and the client it returns)."""

    async def read(scope: RemediationScope, **kw: Any) -> tuple[Any, Object]:
        return client or Writes(), obj

    return read


async def test_a_pass_stores_before_each_risky_step_not_after_each_step() -> None:
    """Repairing → Verifying: the attempt is stored Started before it runs, and the move to
    Verifying is left to the write that ends the pass. Verifying → Uncordoning: the phase is
    stored before the node is given back."""
    h = Harness()
    scope = h.scope(remediation(phase="Repairing"), fault_obj=fault())  # the fault still Active
    assert await h.workflow.advance(scope)
    assert [s.get("phase") for s in h.stored[1:]] == ["Repairing"]
    assert h.stored[-1]["attempts"][-1]["state"] == "Started"
    assert scope.phase == "Verifying"

    h = Harness(nodes=[cordoned_node(MARK)])
    phase_at_uncordon: list[str | None] = []

    async def uncordon(resource: Any, name: str, body: Object, **kw: Any) -> Object:
        phase_at_uncordon.append(h.stored[-1].get("phase"))
        return body

    h.business.patch = uncordon  # type: ignore[method-assign]
    started = {"step": 0, "action": "RestartKubelet", "state": "Started", "startedAt": ago(30)}
    scope = h.scope(remediation(phase="Verifying", attempts=[started]), fault_obj=cleared_at(T0))
    assert await h.workflow.advance(scope)
    assert phase_at_uncordon == ["Uncordoning"]
    assert [s.get("phase") for s in h.stored[1:]] == ["Uncordoning"]
    assert scope.phase == "Succeeded"


async def test_a_young_remediation_without_status_is_left_to_its_starter() -> None:
    """The starter writes a new remediation's status right after creating it; the workflow
    writing it too would only make one of them fail with a Conflict. One left without status
    for long (the starter crashed in between) is started by the workflow."""
    h = Harness()
    young = remediation()
    young["status"] = {}
    young["metadata"]["creationTimestamp"] = ago(1)
    scope = h.scope(young, fault_obj=fault())
    assert not await h.workflow.start(scope)
    assert scope.status == {}
    assert scope.requeue_after is not None
    assert 0 < scope.requeue_after <= 10
    old = remediation()
    old["status"] = {}
    old["metadata"]["creationTimestamp"] = ago(60)
    scope = h.scope(old, fault_obj=fault())
    assert await h.workflow.start(scope)
    assert scope.phase == "Pending"
