"""The fault hub's pure parts: a record's transitions (flaps, history, lastSeen refresh,
retention), the detectors' verdicts on Nodes and Leases, the probe schedule, and a probe of a
simulated host."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kokpit.api.v1alpha1.nodefault import HISTORY_MAX, NODE_CONDITION_FAULTS
from kokpit.controllers.fault import detect
from kokpit.controllers.fault.detect import Findings
from kokpit.controllers.fault.options import FaultOptions
from kokpit.controllers.fault.probe import Prober, in_service, next_probe_in, offset
from kokpit.controllers.fault.record import (
    Observation,
    Where,
    cleared_at,
    expires_in,
    observe,
    parse_time,
    refresh_in,
    stamp,
)
from kokpit.providers.machine.sim import SimExecutor
from kokpit.runtime import Request
from kokpit.runtime.store import Store

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
WHERE = Where("biz", "node-1")
ACTIVE = Observation("KernelDeadlock", "NodeCondition", True, "task hung")
CLEAR = Observation("KernelDeadlock", "NodeCondition", False, "no deadlock")
REFRESH = 300.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def step(status: dict[str, Any] | None, obs: Observation, seconds: float) -> dict[str, Any] | None:
    """Apply ``obs`` at ``seconds``; the status as it is afterwards (written or not)."""
    transition = observe(status, obs, WHERE, at(seconds), REFRESH)
    return transition.status if transition.status is not None else status


# -- a record's life --------------------------------------------------------------------------


def test_a_new_fault_is_one_active_record_seen_once() -> None:
    transition = observe(None, ACTIVE, WHERE, T0, REFRESH)
    assert transition.activated
    assert not transition.cleared
    assert transition.status == {
        "state": "Active",
        "clusterName": "biz",
        "nodeName": "node-1",
        "source": "NodeCondition",
        "message": "task hung",
        "firstSeen": stamp(T0),
        "lastSeen": stamp(T0),
        "count": 1,
        "history": [
            {
                "state": "Active",
                "source": "NodeCondition",
                "time": stamp(T0),
                "message": "task hung",
            }
        ],
    }


def test_a_fault_that_is_not_there_makes_no_record() -> None:
    assert observe(None, CLEAR, WHERE, T0, REFRESH).status is None


@pytest.mark.parametrize("seconds", [1, 60, REFRESH - 1])
def test_a_fault_that_stays_active_is_not_written_again(seconds: float) -> None:
    status = step(None, ACTIVE, 0)
    changed = Observation("KernelDeadlock", "NodeCondition", True, "another message")
    assert observe(status, changed, WHERE, at(seconds), REFRESH).status is None


def test_last_seen_is_refreshed_at_most_every_interval() -> None:
    status = step(None, ACTIVE, 0)
    transition = observe(status, ACTIVE, WHERE, at(REFRESH), REFRESH)
    assert transition.status is not None
    assert not transition.activated
    assert transition.status["lastSeen"] == stamp(at(REFRESH))
    assert transition.status["count"] == 1
    assert len(transition.status["history"]) == 1
    assert refresh_in(transition.status, at(REFRESH), REFRESH) == REFRESH


def test_a_record_follows_its_machine_to_another_node_at_once() -> None:
    status = step(None, ACTIVE, 0)
    moved = observe(status, ACTIVE, Where("biz", "node-2"), at(1), REFRESH)
    assert moved.status is not None
    assert moved.status["nodeName"] == "node-2"


def test_clearing_and_coming_back_is_the_same_record_counted_twice() -> None:
    status = step(None, ACTIVE, 0)
    cleared = observe(status, CLEAR, WHERE, at(10), REFRESH)
    assert cleared.cleared
    assert cleared.status is not None
    assert cleared.status["state"] == "Cleared"
    assert cleared.status["count"] == 1
    assert observe(cleared.status, CLEAR, WHERE, at(20), REFRESH).status is None
    back = observe(cleared.status, ACTIVE, WHERE, at(30), REFRESH)
    assert back.activated
    assert back.status is not None
    assert back.status["count"] == 2
    assert back.status["firstSeen"] == stamp(T0)
    assert [h["state"] for h in back.status["history"]] == ["Active", "Cleared", "Active"]


def test_flapping_keeps_a_bounded_history_of_the_latest_transitions() -> None:
    status = None
    for i in range(40):
        status = step(status, ACTIVE if i % 2 == 0 else CLEAR, i)
    assert status is not None
    assert status["count"] == 20
    assert len(status["history"]) == HISTORY_MAX
    assert status["history"][-1]["time"] == stamp(at(39))
    assert status["history"][0]["time"] == stamp(at(40 - HISTORY_MAX))
    assert status["firstSeen"] == stamp(T0)


def test_fields_of_the_remediation_are_left_alone() -> None:
    status = {**(step(None, ACTIVE, 0) or {}), "remediation": "r-1", "conditions": [{"x": 1}]}
    cleared = observe(status, CLEAR, WHERE, at(5), REFRESH).status
    assert cleared is not None
    assert "remediation" not in cleared
    assert "conditions" not in cleared


def test_a_long_message_is_cut_to_the_api_bound() -> None:
    long = Observation("KernelDeadlock", "NodeCondition", True, "x" * 5000)
    status = observe(None, long, WHERE, T0, REFRESH).status
    assert status is not None
    assert len(status["message"]) == 1024
    assert len(status["history"][0]["message"]) == 1024


def test_a_cleared_record_expires_after_the_retention() -> None:
    status = step(step(None, ACTIVE, 0), CLEAR, 100)
    assert status is not None
    assert cleared_at(status) == at(100)
    assert expires_in(status, at(100), 3600) == 3600
    assert expires_in(status, at(3700), 3600) == 0
    assert expires_in(step(None, ACTIVE, 0) or {}, at(10**6), 3600) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-27T12:00:00Z", T0),
        ("2026-11-27T12:00:00.500000Z", T0 + timedelta(milliseconds=500)),
        ("2026-11-27T13:00:00+01:00", T0),
        ("yesterday", None),
        ("", None),
        (42, None),
        (None, None),
    ],
)
def test_times_written_by_others_parse_or_are_no_time(value: Any, expected: Any) -> None:
    assert parse_time(value) == expected


# -- detectors --------------------------------------------------------------------------------


def node(*conditions: dict[str, Any]) -> dict[str, Any]:
    raw = {
        "metadata": {"name": "node-1", "uid": "u", "resourceVersion": "1", "labels": {"a": "b"}},
        "spec": {"taints": []},
        "status": {
            "capacity": {"cpu": "1"},
            "conditions": [{"lastHeartbeatTime": "2026-11-27T11:00:00Z", **c} for c in conditions],
        },
    }
    return detect.node_view(raw)


def condition(type_: str, status: str, since: datetime = T0, **kw: str) -> dict[str, Any]:
    return {"type": type_, "status": status, "lastTransitionTime": stamp(since), **kw}


def test_the_node_view_keeps_the_conditions_read_and_drops_heartbeats() -> None:
    view = node(condition("Ready", "True"), condition("MemoryPressure", "False"))
    assert view["status"]["conditions"] == [
        {
            "type": "Ready",
            "status": "True",
            "reason": None,
            "message": None,
            "lastTransitionTime": stamp(T0),
        }
    ]
    assert "spec" not in view
    assert "labels" not in view["metadata"]


def test_fault_conditions_true_are_active_false_or_absent_clear_unknown_says_nothing() -> None:
    view = node(
        condition("KernelDeadlock", "True", reason="DockerHung", message="task docker:7 hung"),
        condition("DiskFailure", "False"),
        condition("ReadonlyFilesystem", "Unknown"),
    )
    found = {o.type: o for o in detect.node_conditions(view)}
    assert found["KernelDeadlock"].active
    assert found["KernelDeadlock"].message == "DockerHung: task docker:7 hung"
    assert not found["DiskFailure"].active
    assert not found["GPUFailure"].active  # absent
    assert "ReadonlyFilesystem" not in found
    assert set(found) == set(NODE_CONDITION_FAULTS) - {"ReadonlyFilesystem"}
    assert detect.node_conditions(None) == []


def test_not_ready_within_the_grace_says_nothing_and_comes_back_when_it_ends() -> None:
    findings = Findings()
    detect.node_ready(node(condition("Ready", "False", since=T0)), at(10), 40, findings)
    assert findings.observations == []
    assert findings.recheck_in == 30


def test_not_ready_past_the_grace_is_node_not_ready() -> None:
    findings = Findings()
    view = node(condition("Ready", "Unknown", since=T0, reason="NodeStatusUnknown"))
    detect.node_ready(view, at(41), 40, findings)
    (obs,) = findings.observations
    assert obs.type == "NodeNotReady"
    assert obs.active
    assert obs.source == "NodeReady"
    assert "Unknown" in obs.message
    assert "NodeStatusUnknown" in obs.message


def test_ready_clears_node_not_ready() -> None:
    findings = Findings()
    detect.node_ready(node(condition("Ready", "True")), at(1000), 40, findings)
    assert [(o.type, o.active) for o in findings.observations] == [("NodeNotReady", False)]


def test_a_ready_condition_without_a_usable_time_waits_a_grace_from_now() -> None:
    findings = Findings()
    bad = node({"type": "Ready", "status": "False", "lastTransitionTime": "garbage"})
    detect.node_ready(bad, at(0), 40, findings)
    assert findings.observations == []
    assert findings.recheck_in == 40


def lease(renewed: datetime | None) -> dict[str, Any]:
    spec = {"holderIdentity": "node-1", "leaseDurationSeconds": 40}
    if renewed is not None:
        spec["renewTime"] = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raw = {
        "metadata": {"name": "node-1", "namespace": "kube-node-lease", "resourceVersion": "1"},
        "spec": spec,
    }
    return detect.lease_view(raw)


def test_a_fresh_lease_clears_and_comes_back_when_it_would_turn_stale() -> None:
    findings = Findings()
    detect.node_lease(lease(T0), at(15), 40, findings)
    assert [(o.type, o.active) for o in findings.observations] == [("NodeLeaseStale", False)]
    assert findings.recheck_in == 25


def test_a_lease_not_renewed_past_the_grace_is_stale() -> None:
    findings = Findings()
    detect.node_lease(lease(T0), at(45), 40, findings)
    (obs,) = findings.observations
    assert obs.active
    assert obs.source == "NodeLease"
    assert "45 s ago" in obs.message


def test_no_lease_or_no_renew_time_says_nothing() -> None:
    for value in (None, lease(None)):
        findings = Findings()
        detect.node_lease(value, at(1000), 40, findings)
        assert findings.observations == []
        assert findings.recheck_in is None


def test_only_a_renewal_after_a_stale_gap_reconciles() -> None:
    revived = detect.lease_revived(40)
    assert revived(None, lease(T0))
    assert not revived(lease(T0), lease(at(10)))  # routine renewal
    assert revived(lease(T0), lease(at(60)))  # had gone stale


def test_the_smallest_recheck_wins_and_none_is_a_tight_loop() -> None:
    findings = Findings()
    for seconds in (30, 10, 20, -5):
        findings.recheck(seconds)
    assert findings.recheck_in == 0.5


# -- probes -----------------------------------------------------------------------------------


def test_probes_are_spread_over_the_period_by_a_stable_offset() -> None:
    keys = [f"ns/machine-{i}" for i in range(1000)]
    offsets = [offset(k, 60) for k in keys]
    assert offsets == [offset(k, 60) for k in keys]  # stable
    assert all(0 <= o < 60 for o in offsets)
    per_ten_seconds = [sum(1 for o in offsets if b * 10 <= o < b * 10 + 10) for b in range(6)]
    assert min(per_ten_seconds) > 120  # about 167 each: none of the six slots is starved
    for now in (0.0, 12.3, 59.9, 1e9):
        delay = next_probe_in("ns/machine-1", 60, now)
        assert 1 <= delay < 61
        assert (now + delay - offset("ns/machine-1", 60)) % 60 == pytest.approx(0, abs=1e-6)


def machine(phase: str = "Running", node_name: str | None = "m-1") -> dict[str, Any]:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": "m-1", "namespace": "ns", "uid": "u1"},
        "spec": {
            "clusterRef": {"name": "biz"},
            "executor": "sim",
            "address": "10.0.0.1",
            "packageVersion": "pv",
        },
        "status": {"phase": phase, "nodeName": node_name},
    }


def script(kind: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "version": "1.0",
        "install": {"script": {"check": {"run": "true"}, "install": {"run": "true"}}},
    }


def prober(sim: SimExecutor) -> Prober:
    versions = Store()
    versions.upsert(
        {
            "metadata": {"name": "pv"},
            "spec": {
                "packages": [
                    script("ContainerRuntime", "containerd"),
                    script("Kubelet", "kubelet"),
                    script("Other", "tools"),
                ]
            },
        }
    )
    # A script package without a verify step: give the runtimes one (the sim plays it).
    for package in versions.get("pv")["spec"]["packages"]:  # type: ignore[index]
        package["install"]["script"]["verify"] = {"run": "true"}
    return Prober(None, Store(), versions, {"sim": sim}, FaultOptions(), lambda r: None)  # type: ignore[arg-type]


async def test_a_probe_verifies_the_kubelet_and_the_runtime_of_a_running_machine() -> None:
    sim = SimExecutor(provisioned=True)
    sim.host("ns/m-1").unhealthy.add("kubelet")
    report = await prober(sim).probe(machine())
    assert report is not None
    found = {o.type: o for o in report.observations}
    assert found["KubeletUnhealthy"].active
    assert "kubelet verify failed" in found["KubeletUnhealthy"].message
    assert not found["ContainerRuntimeUnhealthy"].active
    assert not found["HostUnreachable"].active
    assert ("tools", "verify") not in sim.host("ns/m-1").history


async def test_an_unreachable_host_is_host_unreachable_and_nothing_else() -> None:
    sim = SimExecutor(provisioned=True)
    sim.host("ns/m-1").reachable = False
    report = await prober(sim).probe(machine())
    assert report is not None
    assert [(o.type, o.active) for o in report.observations] == [("HostUnreachable", True)]


async def test_a_machine_being_updated_is_probed_for_reachability_only() -> None:
    sim = SimExecutor(provisioned=True)
    report = await prober(sim).probe(machine(phase="Updating"))
    assert report is not None
    assert [(o.type, o.active) for o in report.observations] == [("HostUnreachable", False)]
    assert sim.host("ns/m-1").history == [("kokpit-probe", "check")]


async def test_a_machine_of_an_executor_not_enabled_is_not_probed() -> None:
    report = await prober(SimExecutor()).probe({**machine(), "spec": {"executor": "ssh"}})
    assert report is None


def test_only_joined_machines_not_being_deleted_are_in_service() -> None:
    assert in_service(machine())
    assert not in_service(machine(node_name=None))
    deleting = machine()
    deleting["metadata"]["deletionTimestamp"] = stamp(T0)
    assert not in_service(deleting)


async def test_a_probe_asks_for_a_reconcile_only_when_its_verdicts_change() -> None:
    sim = SimExecutor(provisioned=True)
    asked: list[Request] = []
    probe = prober(sim)
    probe._probed = asked.append
    probe._machines.upsert(machine())
    request = Request("ns", "m-1")
    await probe._probe_one(request)
    await probe._probe_one(request)
    assert asked == [request]
    sim.host("ns/m-1").unhealthy.add("containerd")
    await probe._probe_one(request)
    assert asked == [request, request]
    assert ("ContainerRuntimeUnhealthy", True) in {
        (o.type, o.active) for o in probe.results["ns/m-1"].observations
    }


async def test_a_machine_out_of_service_is_forgotten_by_the_prober() -> None:
    probe = prober(SimExecutor(provisioned=True))
    probe._machines.upsert(machine())
    request = Request("ns", "m-1")
    await probe._probe_one(request)
    assert "ns/m-1" in probe.results
    probe._machines.upsert(machine(node_name=None))
    await probe._probe_one(request)
    assert "ns/m-1" not in probe.results


# -- watches ----------------------------------------------------------------------------------


def test_a_node_or_its_lease_reconciles_the_machine_of_its_name_in_its_cluster_only() -> None:
    from kokpit.controllers.fault.controller import _machine_for

    machines = Store()
    machines.upsert(machine())
    mapper = _machine_for(machines)
    assert mapper("ns/biz", {"metadata": {"name": "m-1"}}) == [Request("ns", "m-1")]
    assert mapper("ns/other", {"metadata": {"name": "m-1"}}) == []  # another cluster's node
    assert mapper("ns/biz", {"metadata": {"name": "kwok-node-0"}}) == []  # no Machine's


def test_machine_changes_that_concern_the_hub() -> None:
    from kokpit.controllers.fault.controller import _service_changed

    before = machine()
    before["metadata"]["generation"] = 1
    assert _service_changed(None, before)
    same = {**before, "status": {**before["status"], "conditions": [{"type": "Ready"}]}}
    assert not _service_changed(before, same)
    for status in ({"phase": "Updating"}, {"nodeName": None}):
        assert _service_changed(before, {**before, "status": {**before["status"], **status}})
