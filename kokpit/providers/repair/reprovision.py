"""Re-provision by the Machine-Operator: the Reprovision rung asks the Machine-Operator to
install the Machine's packages again, and waits until it has.

The request is the Machine annotation
:data:`~kokpit.api.v1alpha1.machine.REPROVISION_ANNOTATION`, whose value is a token unique to
the Remediation's attempt (:attr:`~kokpit.providers.repair.RepairTarget.attempt_id`). The
Machine-Operator serves a token it has not served yet (every package's install step again) and
records it in ``status.reprovisioned``. This splits the work the way Cluster API's
remediate-machine annotation and Metal3's reboot annotation do, and for the same reason: each
operator's crash safety stays its own.

- The requester may write its token again at any time: a token served (or pending) is not
  served twice. So, unlike a reboot, a Reprovision attempt found Started after the
  remediation operator restarts is sent again (:attr:`ReprovisionRepairer.repeatable`), with
  the same token: a request lost to a crash before it was written is never skipped, and one
  written already is never repeated.
- The Machine-Operator records the token only once every package was installed again; killed
  midway, it serves the token again from the first package.

A pending token of another attempt (another remediation of the same Machine) is not
overwritten: this one waits for it to be served, then writes its own.

The repairer returns once its token is served and the Machine is Ready again, or fails at the
attempt's deadline (the rung's timeout, counted from the attempt's start, so a restart does not
extend it), saying what the Machine reports.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from kokpit.api.conditions import READY, get
from kokpit.api.v1alpha1 import MACHINES
from kokpit.api.v1alpha1.machine import REPROVISION_ANNOTATION, REPROVISION_TOKEN_MAX
from kokpit.providers.repair import RepairError, RepairTarget
from kokpit.runtime import ApiError, Conflict, NotFound, Resource

#: How often the Machine is read while the request is waited for.
POLL_INTERVAL = 2.0


class MachineClient(Protocol):
    """What the repairer does with Machines (a :class:`~kokpit.runtime.Client`): read one,
    and patch its annotations."""

    async def get(
        self, res: Resource, name: str, *, namespace: str | None = None
    ) -> dict[str, Any]: ...

    async def patch(
        self, res: Resource, name: str, patch: Any, *, namespace: str | None = None
    ) -> dict[str, Any]: ...


def _error(reason: str, message: str) -> RepairError:
    error = RepairError(message)
    error.reason = reason
    return error


class ReprovisionRepairer:
    """A :class:`~kokpit.providers.repair.Repairer` for Reprovision."""

    actions = frozenset({"Reprovision"})
    repeatable = frozenset({"Reprovision"})

    def __init__(self, client: MachineClient, *, poll_interval: float = POLL_INTERVAL) -> None:
        self._client = client
        self._poll_interval = poll_interval

    async def repair(self, action: str, target: RepairTarget) -> str:
        token = target.attempt_id
        if not token or len(token) > REPROVISION_TOKEN_MAX:
            raise _error("InvalidRequest", f"no usable request token for {action}: {token!r}")
        name, namespace = target.machine_name, target.namespace
        while True:
            machine = await self._machine(name, namespace)
            status = machine.get("status") or {}
            annotations = machine["metadata"].get("annotations") or {}
            served = status.get("reprovisioned")
            ready = get(status.get("conditions") or [], READY) or {}
            if served == token and ready.get("status") == "True":
                return f"{action}: Machine {name} installed its packages again (request {token})"
            pending = annotations.get(REPROVISION_ANNOTATION)
            if served != token and (not pending or pending == served):
                await self._request(machine, token)
            left = target.seconds_left()
            if left <= 0:
                raise _error("ReprovisionTimedOut", _late(name, token, served, pending, ready))
            await asyncio.sleep(min(self._poll_interval, left))

    async def _machine(self, name: str, namespace: str) -> dict[str, Any]:
        try:
            machine = await self._client.get(MACHINES, name, namespace=namespace)
        except NotFound:
            raise _error("MachineNotFound", f"Machine {namespace}/{name} is gone") from None
        except ApiError as e:
            raise _error("MachineUnreadable", f"Machine {namespace}/{name}: {e}") from None
        if machine["metadata"].get("deletionTimestamp"):
            raise _error("MachineDeleting", f"Machine {namespace}/{name} is being deleted")
        return machine

    async def _request(self, machine: dict[str, Any], token: str) -> None:
        """Write ``token``, on the Machine as read: another request written meanwhile is not
        overwritten (the conflict sends the caller round to read again)."""
        meta = machine["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        body = {
            "metadata": {
                "annotations": {REPROVISION_ANNOTATION: token},
                "resourceVersion": meta.get("resourceVersion"),
            }
        }
        try:
            await self._client.patch(MACHINES, name, body, namespace=namespace)
        except Conflict:
            return
        except NotFound:
            raise _error("MachineNotFound", f"Machine {namespace}/{name} is gone") from None
        except ApiError as e:
            raise _error(
                "RequestRefused", f"Machine {namespace}/{name}: the request was refused: {e}"
            ) from None


def _late(name: str, token: str, served: Any, pending: Any, ready: dict[str, Any]) -> str:
    """Why the request did not end in time, from what the Machine reports."""
    if served == token:
        detail = (
            f"its packages were installed again but it is not Ready ({ready.get('reason')}: "
            f"{ready.get('message', '')})"
        )
    elif pending not in (None, token, served):
        detail = f"another request ({pending}) is still pending"
    else:
        detail = (
            f"the Machine-Operator has not served it (Ready: {ready.get('status', 'Unknown')}, "
            f"{ready.get('reason', '')}: {ready.get('message', '')})"
        )
    return f"Machine {name}: re-provisioning request {token} not done in time: {detail}"[:4096]
