"""One drain pass over a faulty node's pods, against a business cluster played by a small
fake that answers like the API server does (the Eviction API refusing with a budget's cause)."""

from __future__ import annotations

from typing import Any

from kokpit.controllers.remediation.drain import drain
from kokpit.controllers.remediation.scope import RemediationScope
from kokpit.runtime import ObjectList, TooManyRequests

Object = dict[str, Any]


class Business:
    def __init__(self, pods: list[Object], budgets: dict[str, str]) -> None:
        #: pod name → the budget that refuses its eviction
        self.budgets = budgets
        self.pods = {p["metadata"]["name"]: p for p in pods}
        self.evicted: list[str] = []
        self.deleted: list[str] = []
        self.labelled: list[str] = []

    async def list(self, resource: Any, **kw: Any) -> ObjectList:
        return ObjectList(list(self.pods.values()), "1")

    async def patch(self, resource: Any, name: str, body: Object, **kw: Any) -> Object:
        self.labelled.append(name)
        return self.pods[name]

    async def evict(self, namespace: str, name: str) -> None:
        if name in self.budgets:
            cause = {
                "reason": "DisruptionBudget",
                "message": f"The disruption budget {self.budgets[name]} needs 2 healthy pods "
                "and has 2 currently",
            }
            raise TooManyRequests(
                "Cannot evict pod as it would violate the pod's disruption budget.",
                status={"details": {"causes": [cause]}},
            )
        self.evicted.append(name)

    async def delete(self, resource: Any, name: str, **kw: Any) -> Object:
        self.deleted.append(name)
        return {}


def pod(name: str, **meta: Any) -> Object:
    return {
        "metadata": {"name": name, "namespace": "apps", "uid": name, **meta},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running"},
    }


def scope(drain_started: str = "2999-01-01T00:00:00Z") -> RemediationScope:
    obj = {
        "metadata": {"name": "n1.kerneldeadlock", "namespace": "ns"},
        "spec": {},
        "status": {"phase": "Draining", "nodeName": "n1", "drain": {"startedAt": drain_started}},
    }
    return RemediationScope(obj)


PODS = [
    pod("web-1"),
    pod("web-2"),
    pod("db-0", annotations={"kokpit.io/migration": "operator"}),
    pod("agent", ownerReferences=[{"kind": "DaemonSet", "name": "agent"}]),
    pod("mirror", annotations={"kubernetes.io/config.mirror": "x"}),
]


async def test_a_pass_labels_evicts_leaves_operator_pods_and_names_a_refusing_budget() -> None:
    business = Business(PODS, {"web-2": "web"})
    s = scope()
    assert not await drain(s, business, 600)  # type: ignore[arg-type]
    assert sorted(business.labelled) == ["db-0", "web-1", "web-2"]  # not the ones that stay
    assert business.evicted == ["web-1"]  # db-0 is its operator's; web-2's budget refused
    assert business.deleted == []
    assert s.status["drain"]["blockedBy"] == ["apps/web"]
    assert s.status["drain"]["podsLeft"] == 3
    [(kind, reason, message)] = s.events
    assert (kind, reason) == ("Warning", "DrainBlocked")
    assert "apps/web-2" in message
    assert "apps/web" in message


async def test_after_the_drain_timeout_the_pods_left_are_deleted() -> None:
    business = Business(PODS, {"web-2": "web"})
    s = scope(drain_started="2000-01-01T00:00:00Z")
    assert not await drain(s, business, 600)  # type: ignore[arg-type]
    assert sorted(business.deleted) == ["db-0", "web-1", "web-2"]
    assert business.evicted == []
    assert s.status["drain"]["deleted"] == 3
    assert [reason for _, reason, _ in s.events] == ["PodsDeleted"]
    # Without a timeout the drain never deletes.
    business = Business(PODS, {"web-2": "web"})
    assert not await drain(scope("2000-01-01T00:00:00Z"), business, None)  # type: ignore[arg-type]
    assert business.deleted == []


async def test_a_node_with_only_pods_that_stay_is_drained() -> None:
    s = scope()
    assert await drain(s, Business(PODS[3:], {}), 600)  # type: ignore[arg-type]
    assert s.status["drain"] == {
        "startedAt": "2999-01-01T00:00:00Z",
        "podsLeft": 0,
        "blockedBy": [],
    }
