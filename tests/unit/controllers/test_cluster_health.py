"""The restart budget and the repair of broken components, with a fake clock (no cluster)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kokpit.api.conditions import get
from kokpit.controllers.cluster import status
from kokpit.controllers.cluster.health import (
    Decision,
    Repairs,
    RestartBudget,
    broken,
    component_statuses,
    decide,
    timestamp,
)
from kokpit.controllers.cluster.options import ClusterOptions
from kokpit.controllers.cluster.scope import ClusterScope
from kokpit.providers.controlplane import (
    CRASH_LOOP_BACK_OFF,
    NOT_RUNNING,
    ORDER,
    UNHEALTHY,
    ComponentHealth,
    ComponentName,
    ComponentPlan,
    ControlPlane,
)

BUDGET = RestartBudget(restarts=3, window=100.0, backoff=1.0, backoff_max=3.0)
T0 = 1_800_000_000.0  # a whole second, as API timestamps are


@pytest.mark.parametrize(
    ("restarts", "now", "expected"),
    [
        ([], T0, Decision("restart", 0.0, 0)),
        # The first restart in the window waits 1 s, the second 2 s, then at most 3 s.
        ([T0], T0 + 0.25, Decision("wait", 0.75, 1)),
        ([T0], T0 + 1, Decision("restart", 0.0, 1)),
        ([T0, T0 + 1], T0 + 2, Decision("wait", 1.0, 2)),
        ([T0, T0 + 1], T0 + 3, Decision("restart", 0.0, 2)),
        # Spent: 3 in the window; free again when the oldest leaves it (T0 + 100).
        ([T0, T0 + 1, T0 + 3], T0 + 10, Decision("exhausted", 90.0, 3)),
        ([T0, T0 + 1, T0 + 3], T0 + 100, Decision("restart", 0.0, 2)),
        ([T0 + 98, T0 + 99, T0 + 100], T0 + 150, Decision("exhausted", 48.0, 3)),
        # Restarts long ago do not count, nor lengthen the backoff.
        ([T0 - 500, T0 - 400], T0, Decision("restart", 0.0, 0)),
        # Order of the record does not matter; more than the budget (a smaller budget now).
        ([T0 + 3, T0, T0 + 1, T0 + 2], T0 + 10, Decision("exhausted", 91.0, 4)),
    ],
)
def test_the_restart_budget_and_backoff(
    restarts: list[float], now: float, expected: Decision
) -> None:
    assert decide(restarts, now, BUDGET) == expected


def test_a_budget_of_no_restarts_never_restarts() -> None:
    none = RestartBudget(restarts=0, window=100.0, backoff=1.0, backoff_max=3.0)
    assert decide([], T0, none) == Decision("exhausted", 100.0, 0)


def test_the_backoff_doubles_up_to_its_maximum() -> None:
    budget = RestartBudget(restarts=10, window=1000.0, backoff=1.0, backoff_max=5.0)
    waits = []
    for n in range(1, 6):
        last = T0 + 100 * n
        waits.append(decide([T0 + 100 * k for k in range(1, n + 1)], last, budget).after)
        assert decide([T0 + 100 * k for k in range(1, n + 1)], last, budget).action == "wait"
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]


PLAN = ComponentPlan("kube-scheduler", "v1.36.3")
DEAD = ComponentHealth(False, None, "kube-scheduler is not running", PLAN.digest, NOT_RUNNING)


@pytest.mark.parametrize(
    ("cluster_status", "health", "expected"),
    [
        ({"phase": "Running"}, DEAD, True),
        # Ran its plan, while another component's step is under way: still a repair.
        ({"phase": "Upgrading", "step": {"component": "kube-apiserver"}}, DEAD, True),
        # Its own step is under way: the step's deadline decides, not a restart.
        ({"phase": "Upgrading", "step": {"component": "kube-scheduler"}}, DEAD, False),
        # Another plan (a new version or flags): a step.
        ({"phase": "Running"}, ComponentHealth(False, None, "", "other", NOT_RUNNING), False),
        # Never applied.
        ({"phase": "Provisioning"}, ComponentHealth(False, None, "", None, NOT_RUNNING), False),
        ({"phase": "Running"}, ComponentHealth(True, "v1.36.3", plan=PLAN.digest), False),
        # What runs never worked: no restarts.
        ({"phase": "Failed"}, DEAD, False),
    ],
)
def test_what_is_repaired_and_what_is_a_step(
    cluster_status: dict[str, Any], health: ComponentHealth, expected: bool
) -> None:
    assert broken(cluster_status, PLAN, health) is expected


class FakeRuntime:
    """A runtime that restarts components (as the process runtime does), recording when."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.restarted: list[tuple[str, float]] = []

    async def apply(self, cp: ControlPlane, plan: ComponentPlan) -> None:
        raise NotImplementedError

    async def health(self, cp: ControlPlane, name: ComponentName) -> ComponentHealth:
        raise NotImplementedError

    async def endpoint(self, cp: ControlPlane) -> str | None:
        return None

    async def delete(self, cp: ControlPlane) -> None:
        raise NotImplementedError

    async def restart(self, cp: ControlPlane, name: ComponentName) -> None:
        self.restarted.append((name, self.clock()))


class ReportingRuntime(FakeRuntime):
    """A runtime whose containers the kubelet restarts: it has no ``restart``."""

    restart = None  # type: ignore[assignment]


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Api:
    """Where the status goes: what a fresh operator (after a crash) reads back."""

    def __init__(self) -> None:
        self.stored: dict[str, Any] = {
            "metadata": {"name": "biz", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": {"runtime": "process"},
            "status": {"phase": "Running"},
        }
        self.writes = 0

    def scope(self, health: ComponentHealth) -> ClusterScope:
        """A reconcile's scope: the stored object, with ``health`` for the scheduler."""
        scope = ClusterScope(copy.deepcopy(self.stored))
        scope.control_plane = ControlPlane("ns", "biz", "u1")
        ok = ComponentHealth(True, "v1.36.3", plan="x")
        scope.health = {n: ok for n in ORDER}
        scope.health["kube-scheduler"] = health

        async def persist() -> None:
            self.save(scope)

        scope._persist = persist
        return scope

    def save(self, scope: ClusterScope) -> None:
        status.update(scope)
        self.stored = copy.deepcopy(scope.obj)
        self.writes += 1


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return get(obj["status"].get("conditions") or [], type_) or {}


def scheduler(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in obj["status"]["components"] if c["name"] == "kube-scheduler")


async def test_a_dying_component_is_restarted_with_backoff_until_the_budget_is_spent() -> None:
    clock = FakeClock(T0)
    runtime = FakeRuntime(clock)
    options = ClusterOptions(
        restart_budget=3,
        restart_window_seconds=100.0,
        restart_backoff_seconds=1.0,
        restart_backoff_max_seconds=3.0,
    )
    api = Api()

    async def reconcile(health: ComponentHealth, repairs: Repairs) -> ClusterScope:
        scope = api.scope(health)
        await repairs.repair(scope, runtime, PLAN, health)
        api.save(scope)
        return scope

    repairs = Repairs(options, clock)
    # Dies: restarted at once, and the restart is in the status before it is made.
    scope = await reconcile(DEAD, repairs)
    assert runtime.restarted == [("kube-scheduler", T0)]
    assert scheduler(api.stored)["restarts"] == [timestamp(T0)]
    assert scheduler(api.stored)["reason"] == NOT_RUNNING
    assert "restarted (1 of 3 restarts in 100 s)" in scheduler(api.stored)["message"]
    assert ("Warning", "ComponentRestarted") in [(t, r) for t, r, _ in scope.events]
    assert condition(api.stored, "Ready")["status"] == "False"
    assert condition(api.stored, "Ready")["reason"] == "ComponentsNotReady"
    assert (
        "kube-scheduler: kube-scheduler is not running" in condition(api.stored, "Ready")["message"]
    )
    assert condition(api.stored, "Degraded")["status"] == "False"

    # Dies again at once: the backoff holds the next restart for 1 s.
    clock.now = T0 + 0.5
    scope = await reconcile(DEAD, repairs)
    assert len(runtime.restarted) == 1
    assert scope.requeue_after == pytest.approx(0.5)
    clock.now = T0 + 1
    await reconcile(DEAD, repairs)
    clock.now = T0 + 3
    await reconcile(DEAD, repairs)
    assert [t for _, t in runtime.restarted] == [T0, T0 + 1, T0 + 3]

    # The budget is spent: Degraded with one Event, and no more restarts...
    clock.now = T0 + 10
    scope = await reconcile(DEAD, repairs)
    assert len(runtime.restarted) == 3
    degraded = condition(api.stored, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RestartBudgetExhausted")
    assert "kube-scheduler" in degraded["message"]
    assert "in 90 s" in degraded["message"]
    assert [r for _, r, _ in scope.events] == ["RestartBudgetExhausted"]
    clock.now = T0 + 20
    scope = await reconcile(DEAD, repairs)
    assert scope.events == [], "the Event is sent when the Cluster turns Degraded, once"
    # ...not even by an operator started afresh (it reads the restarts from the status).
    fresh = Repairs(options, clock)
    clock.now = T0 + 50
    await reconcile(DEAD, fresh)
    assert len(runtime.restarted) == 3
    assert condition(api.stored, "Degraded")["status"] == "True"

    # Once the oldest restart leaves the window, one more is allowed.
    clock.now = T0 + 101
    await reconcile(DEAD, fresh)
    assert [t for _, t in runtime.restarted][-1] == T0 + 101
    assert condition(api.stored, "Degraded")["status"] == "False"


async def test_a_component_healthy_again_gets_a_fresh_budget() -> None:
    clock = FakeClock(T0)
    runtime = FakeRuntime(clock)
    options = ClusterOptions(restart_budget=1, restart_window_seconds=100.0)
    api = Api()
    repairs = Repairs(options, clock)
    scope = api.scope(DEAD)
    await repairs.repair(scope, runtime, PLAN, DEAD)
    api.save(scope)
    clock.now = T0 + 5
    scope = api.scope(DEAD)
    await repairs.repair(scope, runtime, PLAN, DEAD)
    api.save(scope)
    assert condition(api.stored, "Degraded")["status"] == "True"
    # Someone fixed it: healthy again, and its restarts are forgotten.
    api.save(api.scope(ComponentHealth(True, "v1.36.3", plan=PLAN.digest)))
    assert condition(api.stored, "Degraded")["status"] == "False"
    assert "restarts" not in scheduler(api.stored)
    clock.now = T0 + 6
    scope = api.scope(DEAD)
    await repairs.repair(scope, runtime, PLAN, DEAD)
    assert len(runtime.restarted) == 2


async def test_a_component_that_runs_but_fails_its_checks_gets_a_grace_period() -> None:
    clock = FakeClock(T0)
    runtime = FakeRuntime(clock)
    options = ClusterOptions(unhealthy_grace_seconds=30.0, unhealthy_poll_interval=5.0)
    api = Api()
    repairs = Repairs(options, clock)
    sick = ComponentHealth(False, "v1.36.3", "fails /healthz", PLAN.digest, UNHEALTHY)
    for at in (T0, T0 + 10, T0 + 29):
        clock.now = at
        scope = api.scope(sick)
        await repairs.repair(scope, runtime, PLAN, sick)
        api.save(scope)
        assert runtime.restarted == []
        assert scope.requeue_after is not None
        assert scope.requeue_after <= 5.0
    assert scheduler(api.stored)["unreadySince"] == timestamp(T0)
    clock.now = T0 + 30
    scope = api.scope(sick)
    await repairs.repair(scope, runtime, PLAN, sick)
    assert runtime.restarted == [("kube-scheduler", T0 + 30)]


async def test_the_kubernetes_runtime_is_reported_not_restarted() -> None:
    clock = FakeClock(T0)
    runtime = ReportingRuntime(clock)
    api = Api()
    repairs = Repairs(ClusterOptions(), clock)
    looping = ComponentHealth(
        False,
        "v1.36.3",
        "0/1 replicas ready; pod biz-kube-scheduler-x: container kube-scheduler is in "
        "CrashLoopBackOff after 4 restarts",
        PLAN.digest,
        CRASH_LOOP_BACK_OFF,
    )
    scope = api.scope(looping)
    await repairs.repair(scope, runtime, PLAN, looping)
    api.save(scope)
    assert runtime.restarted == []
    degraded = condition(api.stored, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "CrashLoopBackOff")
    assert "biz-kube-scheduler-x" in degraded["message"]
    assert scheduler(api.stored)["reason"] == "CrashLoopBackOff"
    # Not ready, but not crash-looping (yet): reported, not Degraded.
    waiting = ComponentHealth(False, "v1.36.3", "0/1 replicas ready", PLAN.digest, "x")
    scope = api.scope(waiting)
    await repairs.repair(scope, runtime, PLAN, waiting)
    api.save(scope)
    assert condition(api.stored, "Degraded")["status"] == "False"


def test_component_statuses_keep_restarts_and_the_first_unready_time() -> None:
    ok = ComponentHealth(True, "v1", plan="p")
    previous = [
        {"name": "etcd", "ready": True, "restarts": ["2026-01-01T00:00:00Z"]},
        {
            "name": "kube-apiserver",
            "ready": False,
            "unreadySince": "2026-01-01T00:00:05Z",
            "restarts": ["2026-01-01T00:00:06Z"],
        },
    ]
    health: dict[ComponentName, ComponentHealth] = {
        "etcd": ok,
        "kube-apiserver": ComponentHealth(False, None, "gone", "p", NOT_RUNNING),
        "kube-scheduler": ComponentHealth(False, None, "", "p", UNHEALTHY),
    }
    out = component_statuses(
        previous,
        health,
        {"kube-apiserver": "restart in 2 s (backoff)"},
        "2026-01-01T00:01:00Z",
        forget_restarts=False,
    )
    assert out == [
        {"name": "etcd", "version": "v1", "ready": True, "restarts": ["2026-01-01T00:00:00Z"]},
        {
            "name": "kube-apiserver",
            "version": "",
            "ready": False,
            "reason": "NotRunning",
            "message": "gone; restart in 2 s (backoff)",
            "unreadySince": "2026-01-01T00:00:05Z",
            "restarts": ["2026-01-01T00:00:06Z"],
        },
        {
            "name": "kube-scheduler",
            "version": "",
            "ready": False,
            "reason": "Unhealthy",
            "message": "not ready",
            "unreadySince": "2026-01-01T00:01:00Z",
        },
    ]
    forgotten = component_statuses(previous, health, {}, "x", forget_restarts=True)
    assert "restarts" not in forgotten[0], "a healthy component's spent budget is renewed"
    assert forgotten[1]["restarts"] == ["2026-01-01T00:00:06Z"]


def test_degraded_is_kept_by_a_reconcile_that_did_not_check_the_components() -> None:
    scope = ClusterScope(
        {
            "metadata": {"name": "biz", "namespace": "ns", "generation": 1},
            "spec": {},
            "status": {
                "phase": "Running",
                "conditions": [
                    {
                        "type": "Degraded",
                        "status": "True",
                        "reason": "RestartBudgetExhausted",
                        "message": "etcd ...",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            },
        }
    )
    assert status.degraded(scope) == ("Degraded", "True", "RestartBudgetExhausted", "etcd ...")
    ok = ComponentHealth(True, "v1", plan="p")
    scope.health = dict.fromkeys(ORDER, ok)
    assert status.degraded(scope) == ("Degraded", "False", "NotDegraded", "")
