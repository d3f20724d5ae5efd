"""Starting a remediation: each Active NodeFault gets one Remediation, of the same name.

The name makes duplicates impossible: two reports of one fault (or two replicas of this
controller) race to create the same object and the API server lets one win; the loser's
AlreadyExists is success. The policy's ladder is snapshotted into the new Remediation's status,
so a policy edited meanwhile does not change a ladder being climbed.

A fault that comes back after its remediation finished (Succeeded or Closed) — it went Active
again after the remediation's ``finishedAt`` — gets a fresh remediation: the finished one is
deleted (its Events stay) and a new one created. An Escalated remediation is never replaced:
it waits for a person.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

from kokpit.api.conditions import get, now, set_condition
from kokpit.api.v1alpha1 import NODE_FAULTS, REMEDIATIONS
from kokpit.api.v1alpha1.nodefault import REMEDIATED
from kokpit.controllers.remediation.scope import FINALIZER, FINISHED
from kokpit.controllers.remediation.selection import choose_policy
from kokpit.runtime import AlreadyExists, Client, Conflict, NotFound, Request, Result, Store

Object = dict[str, Any]
Status = Literal["True", "False", "Unknown"]
#: Writes of a fault's Remediated condition tried before giving up (the hub writes often).
WRITE_ATTEMPTS = 3


def initial_status(fault: Object, machine: Object, policy: Object) -> Object:
    """A new remediation's status: Pending, with the policy's ladder as it is now."""
    machine_status = machine.get("status") or {}
    fault_status = fault.get("status") or {}
    return {
        "phase": "Pending",
        "nodeName": fault_status.get("nodeName")
        or machine_status.get("nodeName")
        or machine["metadata"]["name"],
        "clusterName": fault_status.get("clusterName") or machine["spec"]["clusterRef"]["name"],
        "faultType": fault["spec"]["type"],
        "ladder": [dict(s) for s in policy["spec"]["steps"]],
        "step": 0,
        "startedAt": now(),
    }


def became_active_at(fault: Object) -> str:
    """When the fault last turned Active (its history's last Active transition)."""
    status = fault.get("status") or {}
    times = [t.get("time", "") for t in status.get("history") or [] if t.get("state") == "Active"]
    return str(max(times, default="") or status.get("firstSeen") or "")


class Starter:
    """The reconciler of NodeFaults: an Active fault without a remediation gets one."""

    def __init__(
        self, client: Client, faults: Store, remediations: Store, machines: Store, policies: Store
    ) -> None:
        self._client = client
        self._faults = faults
        self._remediations = remediations
        self._machines = machines
        self._policies = policies

    async def reconcile(self, request: Request) -> Result:
        fault = self._faults.get(request.key)
        if fault is None or (fault.get("status") or {}).get("state") != "Active":
            return Result()
        existing = self._remediations.get(request.key)
        if existing is not None:
            return await self._existing(fault, existing)
        machine = self._machines.get(f"{request.namespace}/{fault['spec']['machineRef']['name']}")
        if machine is None:
            await self._remediated(
                fault, "False", "MachineNotFound", "its Machine does not exist", None
            )
            return Result()
        policy = choose_policy(
            self._policies.list(request.namespace), machine, fault["spec"]["type"]
        )
        if policy is None:
            message = (
                f"no RemediationPolicy of namespace {request.namespace} selects Machine "
                f"{machine['metadata']['name']} for {fault['spec']['type']}"
            )
            await self._remediated(fault, "False", "NoPolicy", message, None)
            return Result()
        await self._create(fault, machine, policy)
        return Result()

    async def _create(self, fault: Object, machine: Object, policy: Object) -> None:
        meta = fault["metadata"]
        body = {
            "apiVersion": REMEDIATIONS.api_version,
            "kind": REMEDIATIONS.kind,
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "finalizers": [FINALIZER],
            },
            "spec": {
                "faultRef": {"name": meta["name"]},
                "machineRef": {"name": machine["metadata"]["name"]},
                "policyRef": {"name": policy["metadata"]["name"]},
            },
        }
        try:
            created = await self._client.create(REMEDIATIONS, body)
        except AlreadyExists:
            return  # another report of the same fault won the race: one remediation
        status = {
            "metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
            "status": initial_status(fault, machine, policy),
        }
        # The workflow leaves a young remediation without status to this write (see
        # Workflow.start); on a Conflict its reconcile writes it (from the same sources).
        with contextlib.suppress(Conflict):
            await self._client.patch(
                REMEDIATIONS,
                meta["name"],
                status,
                namespace=meta["namespace"],
                subresource="status",
            )
        message = f"Remediation {meta['name']} started (policy {policy['metadata']['name']})"
        await self._remediated(fault, "Unknown", "Remediating", message, meta["name"])

    async def _existing(self, fault: Object, remediation: Object) -> Result:
        status = remediation.get("status") or {}
        finished = status.get("finishedAt") or ""
        if status.get("phase") in FINISHED and became_active_at(fault) > finished:
            meta = remediation["metadata"]
            with contextlib.suppress(NotFound, Conflict):
                await self._client.delete(
                    REMEDIATIONS, meta["name"], namespace=meta["namespace"], uid=meta["uid"]
                )
            return Result(requeue_after=1.0)  # then start afresh
        name = remediation["metadata"]["name"]
        if (fault.get("status") or {}).get("remediation") != name and not finished:
            message = (
                f"Remediation {name} started (policy {remediation['spec']['policyRef']['name']})"
            )
            await self._remediated(fault, "Unknown", "Remediating", message, name)
        return Result()

    async def _remediated(
        self, fault: Object, value: Status, reason: str, message: str, remediation: str | None
    ) -> None:
        """Set the fault's Remediated condition (and the remediation it names), if it differs."""
        status = fault.get("status") or {}
        current = get(status.get("conditions") or [], REMEDIATED) or {}
        same = (current.get("status"), current.get("reason"), current.get("message")) == (
            value,
            reason,
            message,
        )
        if same and status.get("remediation") == remediation:
            return
        await write_remediated(self._client, fault, value, reason, message, remediation)


async def write_remediated(
    client: Client,
    fault: Object,
    value: Status,
    reason: str,
    message: str,
    remediation: str | None,
) -> None:
    """Patch a NodeFault's Remediated condition and the remediation it names (the fault hub
    owns the rest of its status, and writes it often: a conflict is read again and retried)."""
    meta = fault["metadata"]
    for attempt in range(WRITE_ATTEMPTS):
        status = fault.get("status") or {}
        said = get(status.get("conditions") or [], REMEDIATED) or {}
        says = (said.get("status"), said.get("reason"), said.get("message"))
        if (
            attempt
            and status.get("remediation") == remediation
            and says == (value, reason, message)
        ):
            return  # read again after a conflict: it says so already (an earlier write did)
        conditions = set_condition(
            status.get("conditions") or [], REMEDIATED, value, reason, message
        )
        patch = {
            "metadata": {"resourceVersion": fault["metadata"]["resourceVersion"]},
            "status": {"conditions": conditions, "remediation": remediation},
        }
        try:
            await client.patch(
                NODE_FAULTS, meta["name"], patch, namespace=meta["namespace"], subresource="status"
            )
            return
        except NotFound:
            return
        except Conflict:
            try:
                fault = await client.get(NODE_FAULTS, meta["name"], namespace=meta["namespace"])
            except NotFound:
                return
