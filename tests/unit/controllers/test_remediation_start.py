"""Starting remediations: one per Active fault, named as the fault; a fault no policy takes is
told so and nothing else happens; a duplicate create loses the race quietly; a finished
remediation is replaced only when its fault came back after it finished."""

from __future__ import annotations

import copy
from typing import Any

from kokpit.api.conditions import get
from kokpit.controllers.remediation.start import Starter
from kokpit.runtime import AlreadyExists, Request, Store

Object = dict[str, Any]


class Client:
    def __init__(self, *, taken: bool = False) -> None:
        self.taken = taken
        self.created: list[Object] = []
        self.patches: list[tuple[str, str, Object]] = []
        self.deleted: list[str] = []

    async def create(self, resource: Any, body: Object, **kw: Any) -> Object:
        if self.taken:
            raise AlreadyExists("remediations.kokpit.io already exists")
        self.created.append(copy.deepcopy(body))
        return {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}

    async def patch(self, resource: Any, name: str, body: Object, **kw: Any) -> Object:
        self.patches.append((resource.kind, name, copy.deepcopy(body)))
        return body

    async def delete(self, resource: Any, name: str, **kw: Any) -> Object:
        self.deleted.append(name)
        return {}


def fault(active_at: str = "2026-01-01T00:00:10Z") -> Object:
    return {
        "metadata": {"name": "m1.kerneldeadlock", "namespace": "ns", "resourceVersion": "3"},
        "spec": {"machineRef": {"name": "m1"}, "type": "KernelDeadlock"},
        "status": {
            "state": "Active",
            "nodeName": "m1",
            "clusterName": "biz",
            "history": [{"state": "Active", "source": "NodeCondition", "time": active_at}],
        },
    }


def world(client: Client, *, labels: dict[str, str], remediation: Object | None = None) -> Starter:
    faults, remediations, machines, policies = Store(), Store(), Store(), Store()
    faults.upsert(fault())
    machines.upsert(
        {
            "metadata": {"name": "m1", "namespace": "ns", "labels": labels},
            "spec": {"clusterRef": {"name": "biz"}},
        }
    )
    policies.upsert(
        {
            "metadata": {"name": "gpu", "namespace": "ns"},
            "spec": {
                "machineSelector": {"matchLabels": {"gpu": "yes"}},
                "faultTypes": ["KernelDeadlock"],
                "steps": [{"action": "Reboot", "timeoutSeconds": 60}],
            },
        }
    )
    if remediation is not None:
        remediations.upsert(remediation)
    return Starter(client, faults, remediations, machines, policies)  # type: ignore[arg-type]


REQUEST = Request("ns", "m1.kerneldeadlock")


async def test_an_active_fault_gets_one_remediation_of_its_name_with_the_ladder() -> None:
    client = Client()
    await world(client, labels={"gpu": "yes"}).reconcile(REQUEST)
    [created] = client.created
    assert created["metadata"] == {
        "name": "m1.kerneldeadlock",
        "namespace": "ns",
        "finalizers": ["kokpit.io/remediation"],  # the workflow need not add it: no write
    }
    assert created["spec"]["policyRef"] == {"name": "gpu"}
    kinds = [(kind, body) for kind, _, body in client.patches]
    assert kinds[0][0] == "Remediation"
    assert kinds[0][1]["status"]["ladder"] == [{"action": "Reboot", "timeoutSeconds": 60}]
    assert kinds[0][1]["status"]["phase"] == "Pending"
    assert kinds[1][0] == "NodeFault"
    assert kinds[1][1]["status"]["remediation"] == "m1.kerneldeadlock"


async def test_a_fault_no_policy_takes_is_told_so_and_nothing_else_happens() -> None:
    client = Client()
    await world(client, labels={}).reconcile(REQUEST)
    assert client.created == []
    [(kind, name, body)] = client.patches
    remediated = get(body["status"]["conditions"], "Remediated")
    assert (kind, name) == ("NodeFault", "m1.kerneldeadlock")
    assert remediated is not None
    assert (remediated["status"], remediated["reason"]) == ("False", "NoPolicy")


async def test_a_duplicate_create_loses_the_race_quietly() -> None:
    client = Client(taken=True)
    await world(client, labels={"gpu": "yes"}).reconcile(REQUEST)
    assert client.created == []
    assert client.patches == []


def finished(at: str) -> Object:
    return {
        "metadata": {"name": "m1.kerneldeadlock", "namespace": "ns", "uid": "u1"},
        "spec": {"policyRef": {"name": "gpu"}},
        "status": {"phase": "Succeeded", "finishedAt": at},
    }


async def test_a_fault_that_came_back_after_its_remediation_finished_starts_afresh() -> None:
    client = Client()
    came_back = finished("2026-01-01T00:00:05Z")  # the fault turned Active at :10
    await world(client, labels={"gpu": "yes"}, remediation=came_back).reconcile(REQUEST)
    assert client.deleted == ["m1.kerneldeadlock"]
    client = Client()
    still_the_same = finished("2026-01-01T00:00:20Z")  # finished after it turned Active
    await world(client, labels={"gpu": "yes"}, remediation=still_the_same).reconcile(REQUEST)
    assert client.deleted == []
    assert client.created == []


async def test_a_conflicting_write_of_what_the_fault_says_already_is_not_sent_again() -> None:
    """The cache lagged an earlier write of the same condition: the write conflicts, the fresh
    read says so already, and nothing more is written (before: it was written again)."""
    from kokpit.api.conditions import set_condition
    from kokpit.controllers.remediation.start import write_remediated
    from kokpit.runtime import Conflict

    fresh = fault()
    fresh["metadata"]["resourceVersion"] = "4"
    fresh["status"]["remediation"] = "m1.kerneldeadlock"
    fresh["status"]["conditions"] = set_condition([], "Remediated", "Unknown", "Remediating", "m")

    class Lagging(Client):
        async def patch(self, resource: Any, name: str, body: Object, **kw: Any) -> Object:
            await super().patch(resource, name, body, **kw)
            raise Conflict("the object has been modified")

        async def get(self, resource: Any, name: str, **kw: Any) -> Object:
            return copy.deepcopy(fresh)

    client = Lagging()
    stale = fault()
    await write_remediated(client, stale, "Unknown", "Remediating", "m", "m1.kerneldeadlock")  # type: ignore[arg-type]
    assert len(client.patches) == 1
