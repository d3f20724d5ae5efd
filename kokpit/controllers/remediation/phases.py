"""The workflow of one Remediation: a state machine over ``status.phase``, one handler per
phase, each transition stored before the next step runs.

::

    (new) → Pending ──admitted by its policy (storm stop, maxConcurrent)──→ Cordoning
    Cordoning → Draining → Repairing ⇄ Verifying → Uncordoning → Succeeded
                               └── ladder exhausted ──→ Escalated (waits for a person)

Crash safety (status is the only memory):

- **Cordon**: the node is cordoned in one request that also marks it with the remediation
  (the annotation ``kokpit.io/cordoned-by``), conditional on the node being as it was read,
  schedulable. A restart that finds the node cordoned reads from the mark whether kokpit did;
  a node cordoned without this remediation's mark is left cordoned at the end, and the
  uncordon (which takes the mark off) is conditional on the mark too, so one remediation never
  lifts another's cordon, nor a cordon that a repeated uncordon after a crash would meet. One
  case the mark cannot tell: a person who uncordons a node kokpit cordoned and cordons it again
  leaves kokpit's mark on it (kubectl keeps annotations), and the remediation lifts that
  cordon when it ends. ``cordoned: true`` in the status records the cordon for everyone else,
  written at the end of the pass. The node is read from the cluster cache, and fresh only when
  the cache says it is cordoned or a conditional write finds it changed.
- **Repair**: the attempt is stored as ``Started`` *before* the repairer is called. A restarted
  operator that finds the current rung's attempt Started never calls the repairer again: it
  goes on to Verifying and waits out the rung's timeout for the node to recover. The exception
  is an action its repairer declares ``repeatable`` (Reprovision): asking again with the same
  attempt id is harmless there, so the request is sent again rather than possibly lost.
- **Verify**: recovered means the fault Cleared and the Node Ready, both for the policy's
  ``recoverySeconds``, counted from the latest of the fault clearing, the node turning Ready and
  the attempt starting; all three are stored times, so a restart changes nothing. Not within
  the rung's ``timeoutSeconds`` of the attempt's start: the attempt is TimedOut and the next
  rung is tried.
- **Escalate**: stored first; then the metric, the Event and the notifier (at least once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

from kokpit.api.conditions import now
from kokpit.api.v1alpha1.remediation import ATTEMPTS_MAX, CORDONED_BY
from kokpit.api.v1alpha1.riskpolicy import RiskyAction
from kokpit.controllers.remediation import drain, metrics
from kokpit.controllers.remediation.options import RemediationOptions
from kokpit.controllers.remediation.scope import Object, RemediationScope
from kokpit.controllers.remediation.scope import age as age_of
from kokpit.controllers.remediation.start import Status, initial_status, write_remediated
from kokpit.controllers.remediation.storm import node_summary, ready_since
from kokpit.providers.guard import GUARD_DENIED, Guard, Outcome, RiskRequest, held
from kokpit.providers.repair import Repairer, RepairError, RepairTarget
from kokpit.providers.repair.notify import Escalation, EscalationNotifier, NotifyError
from kokpit.runtime import Client, ClusterCache, ClusterNotReady, Conflict, NotFound, Store
from kokpit.runtime.resources import NODES

#: Transitions one reconcile may make before it yields (a bound, not a limit ever reached).
MAX_TRANSITIONS = 16
#: Repair actions that ask the guard first, as the guard's action (restarting the kubelet or
#: the runtime does not ask).
GUARDED_REPAIRS: dict[str, RiskyAction] = {
    "Reboot": "Reboot",
    "PowerCycle": "PowerCycle",
    "Reinstall": "Reinstall",
    "Reprovision": "Reprovision",
}

#: Phases stored as soon as they are reached, before their handler acts: a node given back
#: (uncordoned) must never look, after a crash, like one still out of service for a repair.
STORED_BEFORE = frozenset({"Uncordoning"})
#: Phases after which a pass ends and the remediation goes on in a later one: after its
#: cordon, the worker goes to the next admitted remediation's cordon (queued as a change,
#: ahead of this routine requeue), so a burst of faults is taken out of service first and
#: drained and repaired after.
YIELD_AFTER = frozenset({"Cordoning"})
#: A remediation without status younger than this is the starter's, its status on the way.
STARTER_GRACE = 10.0

Handler = Callable[[RemediationScope], Awaitable[bool]]


#: Conditional cordons tried in one pass while the node keeps changing under them.
CORDON_ATTEMPTS = 3


def _mark(scope: RemediationScope) -> str:
    """What kokpit writes on a node it cordons for ``scope``'s remediation (its uid: a later
    remediation of the same name is another one)."""
    return f"{scope.namespace}/{scope.name}/{scope.uid}"


def _unschedulable(node: Object) -> bool:
    return bool((node.get("spec") or {}).get("unschedulable"))


def _mark_of(node: Object) -> str | None:
    mark = ((node.get("metadata") or {}).get("annotations") or {}).get(CORDONED_BY)
    return None if mark is None else str(mark)


def _cordoned_for(scope: RemediationScope, node: Object) -> bool:
    """The node is cordoned, and marked as cordoned by ``scope``'s remediation. (A mark left
    on a node a person uncordoned meanwhile does not count.)"""
    return _unschedulable(node) and _mark_of(node) == _mark(scope)


def _cordon_patch(node: Object, mark: str | None) -> Object:
    """Cordon ``node`` and mark it with ``mark`` (None: uncordon it and take the mark off),
    only if it is still as read (its resourceVersion)."""
    meta = {
        "resourceVersion": node["metadata"]["resourceVersion"],
        "annotations": {CORDONED_BY: mark},
    }
    return {"metadata": meta, "spec": {"unschedulable": True if mark is not None else None}}


def parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def cleared_since(fault: Object | None) -> str | None:
    """When the fault cleared (None while it is Active). A fault that is gone is cleared."""
    if fault is None:
        return "1970-01-01T00:00:00Z"
    status = fault.get("status") or {}
    if status.get("state") != "Cleared":
        return None
    times = [t.get("time", "") for t in status.get("history") or [] if t.get("state") == "Cleared"]
    return str(max(times, default="") or status.get("lastSeen") or "1970-01-01T00:00:00Z")


def recovery(
    fault: Object | None, node: Object | None, attempt_started: str, hold: float, at: datetime
) -> float | None:
    """Seconds the node still has to stay healthy to count as recovered (0: it has), or None
    while it is not healthy (the fault Active, or the Node not Ready)."""
    cleared, ready = cleared_since(fault), ready_since(node)
    if cleared is None or ready is None:
        return None
    since = max(parse(cleared), parse(ready), parse(attempt_started))
    return max(0.0, hold - (at - since).total_seconds())


class Workflow:
    """The phase handlers, and the one Outline phase that runs them."""

    def __init__(
        self,
        client: Client,
        clusters: ClusterCache,
        *,
        faults: Store,
        machines: Store,
        policies: Store,
        cluster_objects: Store,
        repairers: Mapping[str, Repairer],
        notifier: EscalationNotifier | None,
        options: RemediationOptions,
        guard: Guard | None = None,
    ) -> None:
        self._client = client
        #: Asked before the node is taken out of service (Drain) and before each risky rung.
        self._guard = guard
        self._clusters = clusters
        self._faults = faults
        self._machines = machines
        self._policies = policies
        self._cluster_objects = cluster_objects
        self._repairers = repairers
        self._notifier = notifier
        self._options = options
        self._handlers: dict[str | None, Handler] = {
            None: self.start,
            "Pending": self.pending,
            "Cordoning": self.cordon,
            "Draining": self.drain,
            "Repairing": self.repair,
            "Verifying": self.verify,
            "Uncordoning": self.uncordon,
        }

    # -- the Outline's phases -----------------------------------------------------------------

    async def load(self, scope: RemediationScope) -> bool:
        """Find what the remediation refers to, in the caches."""
        spec, ns = scope.spec, scope.namespace
        scope.fault = self._faults.get(f"{ns}/{spec['faultRef']['name']}")
        scope.machine = self._machines.get(f"{ns}/{spec['machineRef']['name']}")
        scope.policy = self._policies.get(f"{ns}/{spec['policyRef']['name']}")
        return True

    async def advance(self, scope: RemediationScope) -> bool:
        """Run the current phase's handler while it makes progress. The status is written once
        at the end of the pass, and before each step that acts on the node: a repair stores
        its intent itself, the cordon marks the node in the same request, and the uncordon's
        phase is stored before it runs (see :data:`STORED_BEFORE`); the rest (a drain pass, a
        verification) is safe to run again after a crash."""
        for _ in range(MAX_TRANSITIONS):
            phase = scope.phase
            handler = self._handlers.get(phase)
            if handler is None or not await handler(scope):
                return True  # finished, or waiting (a requeue says when to look again)
            if phase in YIELD_AFTER:
                break
            if scope.phase in STORED_BEFORE:
                await scope.persist()
        scope.requeue(0.0)
        return True

    async def finalize(self, scope: RemediationScope) -> bool:
        """A deleted remediation gives back the node kokpit cordoned (unless its Cluster is
        gone, and its nodes with it)."""
        if self._cluster_objects.get(scope.cluster_key) is None:
            return True
        cordoned = await self._kokpit_cordoned(scope)
        if cordoned is None:
            return False
        return not cordoned or await self._uncordon_node(scope)

    # -- phase handlers: True when they moved on ------------------------------------------------

    async def start(self, scope: RemediationScope) -> bool:
        """The starter crashed between creating the remediation and writing its status. A
        young one is left to the starter, whose status write is on its way: writing it here
        too would only make one of the two writes fail with a Conflict."""
        young = STARTER_GRACE - age_of(scope.obj, datetime.now(UTC))
        if young > 0:
            scope.requeue(young)
            return False
        if scope.fault is None or scope.machine is None or scope.policy is None:
            scope.problem = ("NotFound", "its NodeFault, Machine or RemediationPolicy is gone")
            scope.requeue(self._options.retry_interval)
            return False
        scope.status.update(initial_status(scope.fault, scope.machine, scope.policy))
        return True

    async def pending(self, scope: RemediationScope) -> bool:
        """Wait for the policy to admit it; a fault that clears meanwhile needs nothing."""
        if cleared_since(scope.fault) is not None:
            self._finish(scope, "Succeeded", "FaultCleared", "the fault cleared before any repair")
            await self._mark_fault(scope, "True", "Cleared", "the fault cleared by itself")
            return True
        return False

    async def cordon(self, scope: RemediationScope) -> bool:
        client = await self._cluster_client(scope)
        if client is None:
            return False
        _, node = await self._cached_node(scope)
        if node is None or _unschedulable(node):
            # Not in the cache yet, or cordoned: ask the API server, never trust a stale no.
            client, node = await self._node(scope)
        if client is None or node is None:
            return False
        if not await self._allowed(scope, self._drain_request(scope, node)):
            return False
        for _ in range(CORDON_ATTEMPTS):
            if _cordoned_for(scope, node):
                scope.status["cordoned"] = True  # by this remediation, before a restart
                break
            if _unschedulable(node):
                scope.event("Normal", "Cordoned", f"node {scope.node_name} was cordoned already")
                break
            try:
                await client.patch(NODES, scope.node_name, _cordon_patch(node, _mark(scope)))
            except Conflict:  # changed since it was read: read it again and decide again
                client, node = await self._node(scope)
                if client is None or node is None:
                    return False
                continue
            scope.status["cordoned"] = True
            scope.event("Normal", "Cordoned", f"node {scope.node_name} cordoned")
            break
        else:
            scope.problem = ("NodeChanging", f"node {scope.node_name} kept changing")
            scope.requeue(self._options.poll_interval)
            return False
        scope.phase = "Draining"
        scope.status["drain"] = {"startedAt": now(), "podsLeft": 0, "blockedBy": [], "deleted": 0}
        return True

    async def drain(self, scope: RemediationScope) -> bool:
        client = await self._cluster_client(scope)
        if client is None:
            return False
        policy_spec = (scope.policy or {}).get("spec") or {}
        timeout = policy_spec.get("drainTimeoutSeconds", 600) if scope.policy else 600
        if not await drain.drain(scope, client, timeout):
            scope.requeue(self._options.poll_interval)
            return False
        scope.event("Normal", "Drained", f"no pod left to move from node {scope.node_name}")
        scope.phase = "Repairing"
        return True

    async def repair(self, scope: RemediationScope) -> bool:
        ladder, step = scope.ladder, scope.step
        if step >= len(ladder):
            await self._escalate(scope)
            return False
        action = str(ladder[step]["action"])
        repairer = self._repairers.get(action)
        last = scope.last_attempt
        if last is not None and last.get("step") == step and last.get("state") == "Started":
            # Started before a crash: it ran, or may have. Never again (wait for recovery),
            # unless its repairer makes asking again harmless: then a request the crash lost
            # is not skipped.
            if repairer is None or action not in repairer.repeatable:
                scope.phase = "Verifying"
                return True
            attempt: Object = last
            scope.event("Normal", "RepairResumed", f"rung {step}: {action} asked again")
        else:
            # A new attempt asks the guard before it is recorded (a resumed one was granted).
            if action in GUARDED_REPAIRS:
                _, node = await self._cached_node(scope)
                if not await self._allowed(scope, self._repair_request(scope, step, node)):
                    return False
            attempt = {"step": step, "action": action, "state": "Started", "startedAt": now()}
            scope.attempts.append(attempt)
            del scope.attempts[:-ATTEMPTS_MAX]
            await scope.persist()  # Started is on record before the action runs
            metrics.ACTIONS.labels(action, "Started").inc()
            scope.event("Normal", "RepairStarted", f"rung {step}: {action} on {scope.node_name}")
        target = self._target(scope, attempt)
        try:
            if repairer is None:
                raise RepairError(f"no repairer for {action} is configured in this operator")
            if target is None:
                raise RepairError(f"Machine {scope.spec['machineRef']['name']} is gone")
            attempt["message"] = (await repairer.repair(action, target))[:4096]
        except RepairError as e:
            await self._release_repair(scope, "Failed")
            reason = e.reason[:128]
            attempt.update(state="Failed", finishedAt=now(), message=str(e)[:4096], reason=reason)
            metrics.ACTIONS.labels(action, "Failed").inc()
            scope.event("Warning", "RepairFailed", f"rung {step}: {action}: {reason}: {e}")
            scope.status["step"] = step + 1
            return True
        scope.phase = "Verifying"
        return True

    async def verify(self, scope: RemediationScope) -> bool:
        attempt = scope.last_attempt
        if attempt is None:  # cannot happen through the workflow; a hand-edited status
            scope.phase = "Repairing"
            return True
        rung = scope.ladder[min(scope.step, len(scope.ladder) - 1)]
        hold = float(((scope.policy or {}).get("spec") or {}).get("recoverySeconds", 60))
        known, node = await self._cached_node(scope)
        if not known:
            scope.requeue(self._options.poll_interval)
            return False
        at = datetime.now(UTC)
        left = recovery(scope.fault, node, attempt["startedAt"], hold, at)
        if left == 0.0:
            await self._release_repair(scope, "Succeeded")
            attempt.update(state="Succeeded", finishedAt=now())
            metrics.ACTIONS.labels(attempt["action"], "Succeeded").inc()
            message = f"{attempt['action']}: fault cleared and node Ready for {hold:.0f}s"
            scope.event("Normal", "Recovered", message)
            scope.phase = "Uncordoning"
            return True
        deadline = float(rung.get("timeoutSeconds", 600))
        elapsed = (at - parse(attempt["startedAt"])).total_seconds()
        if elapsed >= deadline:
            await self._release_repair(scope, "Failed")
            attempt.update(state="TimedOut", finishedAt=now())
            metrics.ACTIONS.labels(attempt["action"], "TimedOut").inc()
            message = (
                f"rung {scope.step}: {attempt['action']}: not recovered within {deadline:.0f}s"
            )
            scope.event("Warning", "RepairTimedOut", message)
            scope.status["step"] = scope.step + 1
            scope.phase = "Repairing"
            return True
        wait = [deadline - elapsed, self._options.poll_interval]
        if left is not None:
            wait.append(left)
        scope.requeue(max(0.1, min(wait)))
        return False

    async def uncordon(self, scope: RemediationScope) -> bool:
        if scope.status.get("cordoned") and not await self._uncordon_node(scope):
            return False
        await self._release_drain(scope, "Succeeded")
        self._finish(scope, "Succeeded", "Succeeded", f"node {scope.node_name} is back in service")
        await self._mark_fault(scope, "True", "Repaired", f"Remediation {scope.name} succeeded")
        return True

    # -- shared steps ---------------------------------------------------------------------------

    async def close(self, scope: RemediationScope) -> bool:
        """A person ends the remediation: give back what kokpit cordoned, then Closed."""
        cordoned = await self._kokpit_cordoned(scope)
        if cordoned is None or (cordoned and not await self._uncordon_node(scope)):
            return False
        last = scope.last_attempt
        if last is not None and last.get("state") == "Started":
            await self._release_repair(scope, "Cancelled")
            last.update(state="Failed", finishedAt=now(), message="ended by a person (close)")
        await self._release_drain(scope, "Cancelled")
        self._finish(scope, "Closed", "Closed", "closed by a person")
        await self._mark_fault(scope, "False", "Closed", f"Remediation {scope.name} was closed")
        return True

    async def _uncordon_node(self, scope: RemediationScope) -> bool:
        """Give back the node kokpit cordoned and take its mark off, in one request that holds
        only if the node is as read: while it carries this remediation's mark. A node whose
        mark is gone or another remediation's (a person uncordoned it, then it was cordoned
        again) is not touched: that cordon is not this remediation's to lift."""
        _, node = await self._cached_node(scope)
        client = await self._cluster_client(scope)
        if client is None:
            return False
        if node is None or _mark_of(node) != _mark(scope):
            # Not in the cache, or not marked there: ask the API server, never trust a stale no.
            client, node = await self._node(scope, missing_ok=True)
            if client is None:
                return False
        for _ in range(CORDON_ATTEMPTS):
            if node is None:
                break  # the node is gone: nothing to give back
            if _mark_of(node) != _mark(scope):
                if _unschedulable(node):
                    note = f"node {scope.node_name} is left cordoned: not by this remediation"
                    scope.event("Normal", "LeftCordoned", note)
                break
            try:
                await client.patch(NODES, scope.node_name, _cordon_patch(node, None))
            except NotFound:
                break
            except Conflict:  # changed since it was read: read it again and decide again
                client, node = await self._node(scope, missing_ok=True)
                if client is None:
                    return False
                continue
            scope.event("Normal", "Uncordoned", f"node {scope.node_name} uncordoned")
            break
        else:
            scope.problem = ("NodeChanging", f"node {scope.node_name} kept changing")
            scope.requeue(self._options.poll_interval)
            return False
        scope.status["cordoned"] = False
        return True

    async def _kokpit_cordoned(self, scope: RemediationScope) -> bool | None:
        """Whether kokpit cordoned the node (None: not known now). The status says so from the
        end of the pass that cordoned; until then (a restart in Cordoning) the node's mark."""
        if scope.status.get("cordoned"):
            return True
        if scope.phase != "Cordoning":
            return False
        client, node = await self._node(scope, missing_ok=True)
        if client is None:
            return None
        return node is not None and _cordoned_for(scope, node)

    def _finish(self, scope: RemediationScope, phase: str, reason: str, message: str) -> None:
        scope.phase = phase
        scope.status["finishedAt"] = now()
        scope.event("Normal", reason, message)

    async def _escalate(self, scope: RemediationScope) -> None:
        await self._release_drain(scope, "Failed")
        scope.phase = "Escalated"
        await scope.persist()  # the state first; what tells people follows
        policy = scope.spec["policyRef"]["name"]
        metrics.ESCALATIONS.labels(scope.namespace, policy).inc()
        tried = ", ".join(str(s.get("action")) for s in scope.ladder)
        message = (
            f"the ladder ({tried}) is exhausted; node {scope.node_name} stays cordoned until a "
            f"person runs: kokpit remediation resume|close {scope.name} -n {scope.namespace}"
        )
        scope.event("Warning", "Escalated", message)
        await self._mark_fault(scope, "False", "Escalated", message)
        webhook = ((scope.policy or {}).get("spec") or {}).get("escalationWebhook")
        if self._notifier is None or webhook is None:
            return
        escalation = Escalation(
            namespace=scope.namespace,
            remediation=scope.name,
            machine=scope.spec["machineRef"]["name"],
            node_name=scope.node_name,
            cluster_name=str(scope.status.get("clusterName") or ""),
            fault_type=str(scope.status.get("faultType") or ""),
            policy=policy,
            message=message,
            attempts=tuple(scope.attempts),
            webhook=webhook,
        )
        try:
            await self._notifier.escalated(escalation)
        except NotifyError as e:
            scope.event("Warning", "EscalationNotifyFailed", str(e))
        else:
            scope.event("Normal", "EscalationNotified", "the escalation webhook was told")

    async def _mark_fault(
        self, scope: RemediationScope, value: Status, reason: str, message: str
    ) -> None:
        if scope.fault is not None:
            await write_remediated(self._client, scope.fault, value, reason, message, scope.name)

    # -- the guard ------------------------------------------------------------------------------

    async def _allowed(self, scope: RemediationScope, request: RiskRequest) -> bool:
        """Whether the guard lets ``request`` go ahead; if not, the phase's condition and an
        Event say why, and the workflow asks again later."""
        if self._guard is None:
            return True
        verdict = await self._guard.acquire(request)
        if verdict.allowed:
            return True
        o = self._options
        message, wait = held(
            verdict,
            f"{request.action} of node {scope.node_name}",
            at_least=o.poll_interval,
            at_most=o.retry_interval,
        )
        scope.problem = (GUARD_DENIED, message)
        scope.event("Warning", GUARD_DENIED, message)
        scope.requeue(wait)
        return False

    def _drain_request(self, scope: RemediationScope, node: Object | None) -> RiskRequest:
        """Taking the node out of service, from the cordon until the remediation ends."""
        return self._request(scope, "Drain", f"{scope.uid}/drain", node)

    def _repair_request(
        self, scope: RemediationScope, step: int, node: Object | None
    ) -> RiskRequest:
        """The next attempt of rung ``step``: its key counts the attempts of the rung recorded
        before it, so a restart between the ask and the record asks with the same key."""
        tries = sum(1 for a in scope.attempts if a.get("step") == step)
        action = GUARDED_REPAIRS[str(scope.ladder[step]["action"])]
        return self._request(scope, action, f"{scope.uid}/rung-{step}/try-{tries}", node)

    def _request(
        self, scope: RemediationScope, action: RiskyAction, key: str, node: Object | None
    ) -> RiskRequest:
        labels = ((node or {}).get("metadata") or {}).get("labels") or {}
        machine = scope.spec["machineRef"]["name"]
        return RiskRequest(
            action, key, f"Machine {scope.namespace}/{machine}", scope.cluster_key, labels
        )

    async def _release_repair(self, scope: RemediationScope, outcome: Outcome) -> None:
        """Report how the last attempt ended (before its state is written: a crash in between
        reports it again, which the guard answers once)."""
        last = scope.last_attempt
        if self._guard is None or last is None or last.get("action") not in GUARDED_REPAIRS:
            return
        step = int(last.get("step", 0))
        tries = sum(1 for a in scope.attempts[:-1] if a.get("step") == step)
        key = f"{scope.uid}/rung-{step}/try-{tries}"
        request = self._request(scope, GUARDED_REPAIRS[str(last["action"])], key, None)
        await self._guard.release(request, outcome)

    async def _release_drain(self, scope: RemediationScope, outcome: Outcome) -> None:
        if self._guard is not None and "drain" in scope.status:
            await self._guard.release(self._drain_request(scope, None), outcome)

    def _target(self, scope: RemediationScope, attempt: Object) -> RepairTarget | None:
        """What the repairer acts on, with the policy (the Ticket rung posts to its webhook)
        and the attempts so far, the current one last."""
        if scope.machine is None:
            return None
        rung = scope.ladder[attempt["step"]]
        timeout = timedelta(seconds=float(rung.get("timeoutSeconds", 600)))
        return RepairTarget(
            namespace=scope.namespace,
            machine=scope.machine,
            node_name=scope.node_name,
            cluster_name=str(scope.status.get("clusterName") or ""),
            fault_type=str(scope.status.get("faultType") or ""),
            remediation=scope.name,
            policy=scope.policy or {},
            attempts=tuple(scope.attempts),
            attempt_id=f"{scope.metadata.get('uid')}/{attempt['step']}/{attempt['startedAt']}",
            deadline=parse(attempt["startedAt"]) + timeout,
        )

    async def _cluster_client(self, scope: RemediationScope) -> Client | None:
        try:
            return (await self._clusters.get(scope.cluster_key)).client
        except ClusterNotReady as e:
            scope.problem = ("ClusterNotReady", str(e))
            scope.requeue(self._options.retry_interval)
            return None

    async def _node(
        self, scope: RemediationScope, *, missing_ok: bool = False
    ) -> tuple[Client | None, Object | None]:
        """The business cluster's client and the node as it is now (a fresh read)."""
        client = await self._cluster_client(scope)
        if client is None:
            return None, None
        try:
            return client, await client.get(NODES, scope.node_name)
        except NotFound:
            if not missing_ok:
                message = f"node {scope.node_name} not found in Cluster {scope.cluster_key}"
                scope.problem = ("NodeNotFound", message)
                scope.requeue(self._options.retry_interval)
            return client, None

    async def _cached_node(self, scope: RemediationScope) -> tuple[bool, Object | None]:
        """Whether the cluster's node informer has synced, and the node as it holds it."""
        with contextlib.suppress(ClusterNotReady):
            accessor = await self._clusters.get(scope.cluster_key)
            informer = accessor.informer(NODES, transform=node_summary)
            if informer.synced.is_set():
                return True, informer.store.get(scope.node_name)
        return False, None
