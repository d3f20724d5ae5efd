"""Moving a faulty node's pods away, within their PodDisruptionBudgets.

Each pass over the node's pods (DaemonSet, mirror and finished pods stay, as in every drain):

- every pod that must leave is labelled ``kokpit.io/migrate=true``, so its owners and
  dashboards see why it goes;
- a pod annotated ``kokpit.io/migration: operator`` is left to its own operator (a database
  that moves its primary first, say): the drain waits for it to leave;
- every other pod is evicted through the Eviction API. A budget that refuses is reported (in
  ``status.drain.blockedBy``, the Drained condition and an Event), never forced; a budget that
  allows one disruption at a time lets the pods go one at a time, because the API server
  counts each eviction against it;
- once the policy's ``drainTimeoutSeconds`` has passed since the drain began, the pods left are
  deleted (``status.drain.deleted`` counts them). No timeout: the drain waits as long as it
  takes, saying what holds it.

Nothing is remembered between passes but ``status.drain``: a restarted operator picks the
drain up where the node is.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from kokpit.api.v1alpha1.remediation import MIGRATE_LABEL, MIGRATION_ANNOTATION
from kokpit.controllers.remediation.scope import RemediationScope
from kokpit.providers.machine.drain import evict, stays
from kokpit.runtime import Client, Conflict, NotFound
from kokpit.runtime.resources import PODS

Object = dict[str, Any]

#: How many refusing budgets status.drain.blockedBy names (the API's bound).
BLOCKED_MAX = 32


def left_to_operator(pod: Object) -> bool:
    """The pod's own operator moves it (annotation ``kokpit.io/migration: operator``)."""
    return (pod["metadata"].get("annotations") or {}).get(MIGRATION_ANNOTATION) == "operator"


def seconds_since(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - then).total_seconds()


async def drain(scope: RemediationScope, client: Client, drain_timeout: int | None) -> bool:
    """One pass; True once no pod that must leave is left on the node."""
    state: Object = scope.status.setdefault("drain", {})
    pods = (await client.list(PODS, field_selector=f"spec.nodeName={scope.node_name}")).items
    leaving = [p for p in pods if not stays(p)]
    if not leaving:
        state.update(podsLeft=0, blockedBy=[])
        return True
    timed_out = drain_timeout is not None and seconds_since(state.get("startedAt")) > drain_timeout
    blocked: list[str] = []
    refusals: list[str] = []
    for pod in leaving:
        meta = pod["metadata"]
        await _label(client, pod)
        if meta.get("deletionTimestamp"):
            continue
        if timed_out:
            with contextlib.suppress(NotFound, Conflict):
                await client.delete(
                    PODS, meta["name"], namespace=meta["namespace"], uid=meta.get("uid")
                )
                state["deleted"] = int(state.get("deleted") or 0) + 1
            continue
        if left_to_operator(pod):
            continue
        refused = await evict(client, pod)
        if refused is not None:
            refusals.append(refused.pod)
            if refused.budget and refused.budget not in blocked:
                blocked.append(refused.budget)
    state.update(podsLeft=len(leaving), blockedBy=blocked[:BLOCKED_MAX])
    if timed_out:
        names = ", ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in leaving)
        scope.event("Warning", "PodsDeleted", f"drain timeout ({drain_timeout}s): {names[:900]}")
    elif refusals:
        by = ", ".join(blocked) or "the API server (throttled)"
        message = f"eviction of {', '.join(refusals[:10])} refused by {by}"
        scope.event("Warning", "DrainBlocked", message)
    return False


async def _label(client: Client, pod: Object) -> None:
    meta = pod["metadata"]
    if (meta.get("labels") or {}).get(MIGRATE_LABEL) == "true":
        return
    with contextlib.suppress(NotFound, Conflict):
        await client.patch(
            PODS,
            meta["name"],
            {"metadata": {"labels": {MIGRATE_LABEL: "true"}}},
            namespace=meta["namespace"],
        )
