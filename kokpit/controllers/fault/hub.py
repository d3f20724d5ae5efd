"""The fault hub's writes: a Machine's NodeFault records created, updated on a transition, and
deleted once cleared long enough.

- **Create, or update what exists.** A new fault creates ``<machine>.<type>`` (the only name
  the API server accepts for it) and then writes its status. A create that finds the name
  taken (another detector, another replica, a cache that had not seen the record yet) reads the
  record and applies the same transition to it: two reports at once make one record.
- **Conditional writes.** Every status write carries the resourceVersion it was computed from
  (:class:`~kokpit.runtime.PatchHelper`): a transition computed from a stale copy fails with
  Conflict, and the reconcile runs again from fresh state, so a flap is never counted twice.
- A record carries a (non-controller) ownerReference to its Machine: the Machine's deletion
  takes its faults with it.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from kokpit.api.v1alpha1 import NODE_FAULTS
from kokpit.api.v1alpha1.nodefault import fault_name
from kokpit.controllers.fault import metrics
from kokpit.controllers.fault.record import Observation, Transition, Where, observe
from kokpit.runtime import AlreadyExists, Client, NotFound, PatchHelper, owner_reference

Object = dict[str, Any]


class Hub:
    def __init__(self, client: Client, last_seen_interval: float) -> None:
        self._client = client
        self._last_seen_interval = last_seen_interval

    async def report(
        self,
        machine: Object,
        record: Object | None,
        observation: Observation,
        where: Where,
        now: datetime,
    ) -> Transition:
        """Apply ``observation`` to the Machine's record of its type (``record``: the cached
        one, None if the cache has none); returns what changed."""
        transition = self._transition(record, observation, where, now)
        if transition.status is None:
            return transition
        if record is None:  # new: create it, then write the status it starts with
            try:
                record = await self._client.create(NODE_FAULTS, _new(machine, observation.type))
            except AlreadyExists:
                meta = machine["metadata"]
                name = fault_name(meta["name"], observation.type)
                record = await self._client.get(NODE_FAULTS, name, namespace=meta["namespace"])
                transition = self._transition(record, observation, where, now)
        if transition.status is None:
            return transition
        await _write_status(self._client, record, transition.status)
        if transition.activated or transition.cleared:
            state = "Active" if transition.activated else "Cleared"
            metrics.TRANSITIONS.labels(observation.type, state).inc()
        return transition

    async def delete(self, record: Object) -> None:
        """Delete a record that stayed Cleared past the retention: only the version read (one
        that turned Active again since is left alone, and the reconcile runs again)."""
        meta = record["metadata"]
        try:
            await self._client.delete(
                NODE_FAULTS,
                meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
                resource_version=meta["resourceVersion"],
            )
        except NotFound:
            return

    def _transition(
        self, record: Object | None, observation: Observation, where: Where, now: datetime
    ) -> Transition:
        status = (record or {}).get("status")
        return observe(status, observation, where, now, self._last_seen_interval)


async def _write_status(client: Client, record: Object, owned: Object) -> None:
    after = copy.deepcopy(record)
    status = after.setdefault("status", {})
    status.update(owned)
    await PatchHelper(client, NODE_FAULTS, record).patch(after)


def _new(machine: Object, fault_type: str) -> Object:
    meta = machine["metadata"]
    return {
        "apiVersion": NODE_FAULTS.api_version,
        "kind": NODE_FAULTS.kind,
        "metadata": {
            "name": fault_name(meta["name"], fault_type),
            "namespace": meta["namespace"],
            "ownerReferences": [owner_reference(machine, controller=False)],
        },
        "spec": {"machineRef": {"name": meta["name"]}, "type": fault_type},
    }
