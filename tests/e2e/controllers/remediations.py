"""Node faults and Remediations in one namespace, as the self-healing e2e tests write and read
them: a node reports a kernel deadlock the way node-problem-detector does, the fault hub
records it, and a test waits on the Remediation that follows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kokpit.api.conditions import get
from kokpit.api.v1alpha1 import NODE_FAULTS, REMEDIATIONS
from kokpit.runtime import Client, NotFound, PatchType
from kokpit.runtime.resources import EVENTS, NODES
from tests.e2e.support import until

Object = dict[str, Any]


def phase_is(*phases: str) -> Callable[[Object], bool]:
    return lambda o: (o.get("status") or {}).get("phase") in phases


def condition(obj: Object, type_: str) -> Object:
    return get((obj.get("status") or {}).get("conditions") or [], type_) or {}


async def unschedulable(business: Client, node: str) -> bool:
    return bool((await business.get(NODES, node)).get("spec", {}).get("unschedulable"))


async def kernel_deadlock(business: Client, machine: str, status: str, message: str) -> None:
    """Write the Node's KernelDeadlock condition as node-problem-detector does."""
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    written = {
        "type": "KernelDeadlock",
        "status": status,
        "reason": "KernelHasDeadlock" if status == "True" else "KernelHasNoDeadlock",
        "message": message,
        "lastHeartbeatTime": at,
        "lastTransitionTime": at,
    }
    await business.patch(
        NODES,
        machine,
        {"status": {"conditions": [written]}},
        patch_type=PatchType.STRATEGIC,
        subresource="status",
    )


class Faults:
    """The NodeFaults, Remediations and their Events of ``namespace``."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    async def state(self, client: Client, machine: str, state: str) -> Object | None:
        """The machine's KernelDeadlock record, if it is in ``state``."""
        try:
            fault = await client.get(
                NODE_FAULTS, f"{machine}.kerneldeadlock", namespace=self.namespace
            )
        except NotFound:
            return None
        return fault if (fault.get("status") or {}).get("state") == state else None

    async def report(
        self, client: Client, business: Client, machine: str, count: int = 1
    ) -> Object:
        """The node reports a kernel deadlock (report number ``count``); the fault hub records
        it: returns the Active NodeFault."""
        message = f"kernel: task blocked for more than 120 seconds (report {count})"
        await kernel_deadlock(business, machine, "True", message)
        fault: Object = await until(
            f"{machine}'s fault recorded", lambda: self.state(client, machine, "Active"), 30
        )
        return fault

    async def clear(self, client: Client, business: Client, machine: str) -> None:
        """The node's kernel recovered; the fault hub clears the record."""
        await kernel_deadlock(business, machine, "False", "kernel is fine")
        await until(
            f"{machine}'s fault cleared", lambda: self.state(client, machine, "Cleared"), 30
        )

    def remediation_where(
        self, client: Client, name: str, done: Callable[[Object], bool]
    ) -> Callable[[], Any]:
        async def check() -> Object | None:
            try:
                obj = await client.get(REMEDIATIONS, name, namespace=self.namespace)
            except NotFound:
                return None
            return obj if done(obj) else None

        return check

    async def events(self, client: Client, name: str) -> list[Object]:
        found = await client.list(
            EVENTS, namespace=self.namespace, field_selector=f"regarding.name={name}"
        )
        return sorted(found.items, key=lambda e: e.get("eventTime") or "")

    async def reasons(self, client: Client, name: str) -> list[str]:
        return [e["reason"] for e in await self.events(client, name)]

    async def saw(self, client: Client, name: str, *reasons: str, within: float = 10) -> list[str]:
        """Wait until Events with every one of ``reasons`` are recorded about ``name`` (they are
        recorded after the status a test waited for); returns all reasons seen."""

        async def seen() -> list[str] | None:
            found = await self.reasons(client, name)
            return found if set(reasons) <= set(found) else None

        return await until(f"Events {', '.join(reasons)} about {name}", seen, within)
