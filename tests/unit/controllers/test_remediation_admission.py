"""Admission of Pending remediations by their policy: the storm stop holds every start in an
unhealthy scope, maxConcurrent holds the rest, even while the cache lags the admissions just
made, and nothing in a scope starts until its unhealthy nodes have stopped growing for the
admission delay. The caches are real stores; the client only records the patches sent, and the
clock is the test's."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kokpit.api.conditions import get
from kokpit.controllers.remediation.admission import BY_POLICY, Admission, by_policy
from kokpit.controllers.remediation.options import RemediationOptions
from kokpit.controllers.remediation.quiet import QuietPeriod
from kokpit.controllers.remediation.storm import node_summary
from kokpit.runtime import Conflict, Request, Store
from kokpit.runtime.errors import ServerError

Object = dict[str, Any]


def stamp(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


class Client:
    """Records patches; answers them with the object's new resourceVersion."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, str, Object]] = []
        #: Raised by the writes of the policy's status, when set.
        self.policy_status_error: Exception | None = None

    async def patch(self, resource: Any, name: str, body: Object, **kw: Any) -> Object:
        if resource.kind == "RemediationPolicy" and self.policy_status_error is not None:
            raise self.policy_status_error
        self.patches.append((resource.kind, name, copy.deepcopy(body)))
        return {"metadata": {"name": name, "resourceVersion": str(len(self.patches) + 100)}}

    def admitted(self) -> list[str]:
        return [n for kind, n, b in self.patches if kind == "Remediation"]

    def policy_status(self) -> Object:
        status: Object = [b for k, _, b in self.patches if k == "RemediationPolicy"][-1]["status"]
        return status


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def event(self, regarding: Object, type_: str, reason: str, note: str) -> None:
        self.events.append((regarding["metadata"]["name"], reason, note))


class Clusters:
    def __init__(self, nodes: list[Object]) -> None:
        self.store = Store()
        for n in nodes:
            self.store.upsert(n)
        self.synced = asyncio.Event()
        self.synced.set()

    async def get(self, key: str) -> Clusters:
        return self

    def informer(self, resource: Any, **kw: Any) -> Clusters:
        return self


def node(name: str, reports: str | None = None) -> Object:
    ready = {"type": "Ready", "status": "True", "lastTransitionTime": stamp(600)}
    meta = {"name": name, "labels": {"zone": "a"}}
    conditions = [ready]
    if reports is not None:  # a fault condition, as node-problem-detector writes it
        conditions.append({"type": reports, "status": "True", "reason": "KernelHasDeadlock"})
    return node_summary({"metadata": meta, "spec": {}, "status": {"conditions": conditions}})


def fault(machine: str) -> Object:
    return {
        "metadata": {"name": f"{machine}.kerneldeadlock", "namespace": "ns"},
        "spec": {"machineRef": {"name": machine}, "type": "KernelDeadlock"},
        "status": {"state": "Active", "nodeName": machine, "clusterName": "biz"},
    }


def remediation(machine: str, phase: str = "Pending", age: float = 60) -> Object:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Remediation",
        "metadata": {
            "name": f"{machine}.kerneldeadlock",
            "namespace": "ns",
            "resourceVersion": "7",
            "creationTimestamp": stamp(age),
            "uid": machine,
        },
        "spec": {"policyRef": {"name": "p"}, "machineRef": {"name": machine}},
        "status": {"phase": phase, "nodeName": machine, "clusterName": "biz"},
    }


class World:
    """A policy over ``nodes`` healthy nodes in one zone; ``delay`` 0 unless a test is about
    the quiet period."""

    def __init__(
        self, nodes: int, max_concurrent: int = 5, delay: float = 0.0, recheck: float = 2.0
    ) -> None:
        self.now = 0.0
        self.client = Client()
        self.recorder = Recorder()
        self.policies, self.faults = Store(), Store()
        self.remediations = Store({BY_POLICY: by_policy})
        self.policies.upsert(
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "RemediationPolicy",
                "metadata": {
                    "name": "p",
                    "namespace": "ns",
                    "generation": 1,
                    "resourceVersion": "1",
                },
                "spec": {
                    "stormStop": {"maxConcurrent": max_concurrent, "minHealthyPercent": 70},
                },
            }
        )
        self.admission = Admission(
            self.client,  # type: ignore[arg-type]
            Clusters([node(f"n{i}") for i in range(nodes)]),  # type: ignore[arg-type]
            policies=self.policies,
            remediations=self.remediations,
            faults=self.faults,
            machines=Store(),
            recorder=self.recorder,  # type: ignore[arg-type]
            options=RemediationOptions(admission_delay=delay, admission_recheck=recheck),
            quiet=QuietPeriod(delay, clock=lambda: self.now),
        )

    def nodes(self, *nodes: Object) -> None:
        self.admission._clusters = Clusters(list(nodes))  # type: ignore[assignment]

    def faulty(self, *machines: str, phase: str = "Pending", age: float = 60) -> None:
        for m in machines:
            self.faults.upsert(fault(m))
            self.remediations.upsert(remediation(m, phase, age))

    async def reconcile(self) -> float | None:
        return (await self.admission.reconcile(Request("ns", "p"))).requeue_after


async def test_forty_percent_faulty_stops_every_start_and_says_where_and_why() -> None:
    world = World(nodes=5)
    world.faulty("n0", "n1")
    assert await world.reconcile() is not None  # looks again
    assert world.client.admitted() == []
    stopped = get(world.client.policy_status()["conditions"], "StormStopped")
    assert stopped is not None
    assert stopped["status"] == "True"
    assert stopped["message"] == (
        "no remediation starts in Cluster ns/biz: 3 of 5 nodes healthy (60%, below 70%)"
    )
    assert ("p", "StormStopped", stopped["message"]) in world.recorder.events
    waiting = [name for name, reason, _ in world.recorder.events if reason == "StormStopped"]
    assert {"n0.kerneldeadlock", "n1.kerneldeadlock"} <= set(waiting)


async def test_a_storm_the_nodes_report_stops_starts_before_the_hub_has_recorded_it() -> None:
    """Under load the hub records a storm's faults over tens of seconds, with pauses: the
    nodes' own fault conditions count at once (here one fault of two is recorded, and its
    remediation would otherwise start: 4 of 5 healthy)."""
    world = World(nodes=0)
    world.nodes(*(node(f"n{i}", reports="KernelDeadlock" if i < 2 else None) for i in range(5)))
    world.faulty("n0")  # n1's fault is on its Node, not yet in the hub's records
    assert await world.reconcile() is not None
    assert world.client.admitted() == []
    stopped = get(world.client.policy_status()["conditions"], "StormStopped")
    assert stopped is not None
    assert "3 of 5 nodes healthy" in stopped["message"]


async def test_one_fault_in_five_is_admitted_and_the_stop_is_off() -> None:
    world = World(nodes=5)
    world.faulty("n0")
    assert await world.reconcile() is None
    assert world.client.admitted() == ["n0.kerneldeadlock"]
    [(_, _, patch)] = [p for p in world.client.patches if p[0] == "Remediation"]
    assert patch == {"metadata": {"resourceVersion": "7"}, "status": {"phase": "Cordoning"}}
    status = world.client.policy_status()
    assert status["inProgress"] == 1
    assert get(status["conditions"], "StormStopped")["status"] == "False"  # type: ignore[index]


async def test_max_concurrent_holds_even_while_the_cache_lags_its_own_admissions() -> None:
    world = World(nodes=10, max_concurrent=1)
    world.faulty("n0", age=90)
    world.faulty("n1", age=60)
    assert await world.reconcile() is not None
    assert world.client.admitted() == ["n0.kerneldeadlock"]  # the oldest first
    assert await world.reconcile() is not None  # the cache still says n0 is Pending
    assert world.client.admitted() == ["n0.kerneldeadlock"]
    world.remediations.upsert(remediation("n0", "Draining"))
    await world.reconcile()
    assert world.client.admitted() == ["n0.kerneldeadlock"]
    world.remediations.upsert(remediation("n0", "Succeeded"))
    await world.reconcile()
    assert world.client.admitted() == ["n0.kerneldeadlock", "n1.kerneldeadlock"]


async def test_a_new_fault_waits_the_admission_delay() -> None:
    world = World(nodes=5, delay=30)
    world.faulty("n0")
    assert await world.reconcile() is not None
    assert world.client.admitted() == []
    world.now = 29.0
    await world.reconcile()
    assert world.client.admitted() == []
    world.now = 30.0
    await world.reconcile()
    assert world.client.admitted() == ["n0.kerneldeadlock"]


async def test_a_waiting_remediation_is_looked_at_again_when_its_delay_ends() -> None:
    """Not a fixed recheck later: under a 3 s delay, 1 s after its scope last grew, a
    remediation is back in 2 s, never the full recheck of 5 s."""
    world = World(nodes=5, delay=3, recheck=5)
    world.faulty("n0")
    assert await world.reconcile() == 3.0
    world.now = 1.0
    assert await world.reconcile() == 2.0
    world = World(nodes=5, delay=30, recheck=5)  # longer than the recheck: the recheck bounds it
    world.faulty("n0")
    assert await world.reconcile() == 5.0


async def test_nothing_in_a_scope_starts_while_its_faults_are_still_arriving() -> None:
    """A storm arriving over many seconds: the first faults of a scope are not admitted while
    later ones keep coming; once none has come for the delay, the scope is judged whole."""
    world = World(nodes=10, max_concurrent=100, delay=5)
    world.faulty("n0", "n1")  # 2 of 10 down: on their own, healthy enough
    await world.reconcile()
    world.now = 4.0
    world.faulty("n2")  # 3 of 10 down, still healthy enough: the quiet period starts again
    await world.reconcile()
    world.now = 8.0
    await world.reconcile()
    assert world.client.admitted() == [], "held while the scope's faults keep arriving"
    world.now = 9.0
    await world.reconcile()
    assert sorted(world.client.admitted()) == [f"n{i}.kerneldeadlock" for i in range(3)]


async def test_growth_that_never_stops_holds_a_scope_for_ten_delays_at_most() -> None:
    """Nodes keep turning unhealthy one by one (joining, or rebooted by a rollout), never
    reaching a storm: after ten delays from the first growth the scope is judged as it is."""
    world = World(nodes=100, max_concurrent=100, delay=2)
    world.faulty("n0")
    await world.reconcile()
    for second in range(1, 20):  # another node down every second, never quiet for 2 s
        world.now = float(second)
        world.nodes(
            *(node(f"n{i}", reports="KernelDeadlock" if i <= second else None) for i in range(100))
        )
        await world.reconcile()
        assert world.client.admitted() == [], f"held at {second} s"
    world.now = 20.0
    await world.reconcile()
    assert world.client.admitted() == ["n0.kerneldeadlock"]


async def test_a_storm_still_arriving_is_stopped_the_moment_it_is_one() -> None:
    world = World(nodes=10, max_concurrent=100, delay=5)
    world.faulty("n0", "n1")
    await world.reconcile()
    world.now = 1.0
    world.faulty("n2", "n3")  # 4 of 10 down: a storm, whatever else is still to come
    await world.reconcile()
    stopped = get(world.client.policy_status()["conditions"], "StormStopped")
    assert stopped is not None
    assert stopped["status"] == "True"
    assert "6 of 10 nodes healthy" in stopped["message"]
    world.now = 60.0
    await world.reconcile()
    assert world.client.admitted() == []


async def test_a_fault_the_hub_records_after_its_scope_went_quiet_starts_at_once() -> None:
    """The nodes' conditions are counted before the hub records their faults: once the scope
    has been quiet for the delay, a remediation the hub makes later waits no more."""
    world = World(nodes=0, max_concurrent=100, delay=2)
    world.nodes(*(node(f"n{i}", reports="KernelDeadlock" if i < 2 else None) for i in range(10)))
    world.faulty("n0")  # n1's fault is on its Node only, so far
    assert await world.reconcile() == 2.0
    world.now = 2.0
    await world.reconcile()
    assert world.client.admitted() == ["n0.kerneldeadlock"]
    world.now = 5.0
    world.faulty("n1")  # the hub records it now
    assert await world.reconcile() is None
    assert world.client.admitted() == ["n0.kerneldeadlock", "n1.kerneldeadlock"]


async def test_a_node_that_recovers_does_not_restart_the_quiet_period_one_that_fails_does() -> None:
    world = World(nodes=0, max_concurrent=100, delay=2)
    reporting = [node(f"n{i}", reports="KernelDeadlock" if i < 2 else None) for i in range(10)]
    world.nodes(*reporting)
    world.faulty("n0")
    await world.reconcile()
    world.now = 1.0
    world.nodes(node("n0", reports="KernelDeadlock"), *(node(f"n{i}") for i in range(1, 10)))
    await world.reconcile()  # n1 recovered: fewer unhealthy, not more
    world.now = 2.0
    await world.reconcile()
    assert world.client.admitted() == ["n0.kerneldeadlock"]
    world.nodes(*reporting)  # n1 fails again, and the hub records it
    world.faulty("n1")
    world.now = 3.0
    await world.reconcile()
    world.now = 4.9
    await world.reconcile()
    assert world.client.admitted() == ["n0.kerneldeadlock"]
    world.now = 5.0
    await world.reconcile()
    assert world.client.admitted() == ["n0.kerneldeadlock", "n1.kerneldeadlock"]


async def test_a_restarted_operator_waits_the_delay_once_more() -> None:
    """The quiet period's times are the process's own: a new one has seen nothing, however
    long the scope's faults have been there."""
    world = World(nodes=10, max_concurrent=100, delay=2)
    world.faulty("n0", "n1")
    world.now = 100.0
    assert await world.reconcile() == 2.0
    assert world.client.admitted() == []


async def test_a_policy_status_that_conflicts_keeps_the_admissions_and_looks_again() -> None:
    """The policy's status is written with the admissions; when it was read before this
    process's last write of it reached the cache, the admissions made still count against
    maxConcurrent, and the next pass (soon) writes the status."""
    world = World(nodes=10, max_concurrent=1)
    world.faulty("n0", age=90)
    world.faulty("n1", age=60)
    world.client.policy_status_error = Conflict("the object has been modified")
    assert await world.reconcile() == RemediationOptions().poll_interval
    assert world.client.admitted() == ["n0.kerneldeadlock"]
    world.client.policy_status_error = None
    assert await world.reconcile() is not None  # n1 waits: n0 is in progress, as admitted
    assert world.client.admitted() == ["n0.kerneldeadlock"]
    assert world.client.policy_status()["inProgress"] == 1


async def test_an_error_writing_the_policy_status_still_keeps_the_admissions_made() -> None:
    """Any other error of the status write (the API server's 5xx, a timeout) fails the pass
    (it is retried with backoff), but only after the admissions sent with it are remembered:
    the next pass, with a cache still showing them Pending, admits nothing past
    maxConcurrent."""
    world = World(nodes=10, max_concurrent=1)
    world.faulty("n0", age=90)
    world.faulty("n1", age=60)
    world.client.policy_status_error = ServerError("etcdserver: request timed out")
    with pytest.raises(ServerError):
        await world.reconcile()
    assert world.client.admitted() == ["n0.kerneldeadlock"]
    world.client.policy_status_error = None
    assert await world.reconcile() is not None  # n1 waits: n0 is in progress, as admitted
    assert world.client.admitted() == ["n0.kerneldeadlock"]
