"""A rollout's workflow: batch after batch, each checked, and the way back when one fails.

Every pass works from what the API server holds, so an operator killed at any line resumes
correctly:

- a batch is recorded ``Verifying`` (with its start time) *before* any of its objects is
  changed, and each object's change carries the rollout's mark in the same request
  (:mod:`.plan`): after a restart the batch is filled up to its size from the objects without
  a mark, so none is changed twice and none is skipped;
- every change is a patch conditional on the object's resourceVersion, so a pass working from
  a cache that has not yet seen its own earlier write gets a conflict, never a second change;
- the decision to abort is stored (phase ``RollingBack``) before the first object is moved
  back, and moving back sets the version recorded in the object's own mark.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kokpit.api.conditions import now
from kokpit.api.v1alpha1.rollout import CHANGE_ANNOTATION, MEASUREMENTS_MAX
from kokpit.api.v1alpha1.selector import matches
from kokpit.controllers.rollout.analysis import MetricReader, measure_round
from kokpit.controllers.rollout.options import RolloutOptions
from kokpit.controllers.rollout.plan import Change, change_of, next_members, planned_sizes
from kokpit.controllers.rollout.scope import FINISHED, RolloutScope, seconds_since
from kokpit.controllers.rollout.targets import ready
from kokpit.providers.guard import GUARD_DENIED, Guard, Outcome, RiskRequest, held
from kokpit.runtime import ApiError, Client, Conflict, Forbidden, NotFound
from kokpit.runtime.store import Store

Object = dict[str, Any]

#: The index of Rollouts by uid (the marks on objects name a rollout by its uid).
BY_UID = "uid"
#: Seconds this process reads its own write of an object in place of the cache's copy.
WRITTEN_TTL = 60.0
#: At most this many object names in one message.
NAMES_SHOWN = 10


class Progress:
    """The ``load`` and ``advance`` phases of the Rollout-Operator's outline."""

    def __init__(
        self,
        client: Client,
        rollouts: Store,
        objects: Mapping[str, Store],
        metrics: MetricReader | None,
        guard: Guard | None,
        options: RolloutOptions,
    ) -> None:
        self._client = client
        self._rollouts = rollouts
        self._objects = objects
        self._metrics = metrics
        self._guard = guard
        self._options = options
        #: Objects this process changed that the cache has not shown changed yet, by uid, with
        #: when: read in their place (see :meth:`_fresh`).
        self._written: dict[str, tuple[Object, float]] = {}

    # -- load ---------------------------------------------------------------------------------

    async def load(self, scope: RolloutScope) -> bool:
        """Find the selected objects and those this run changed; start a new rollout."""
        target = scope.spec["target"]
        objects = [self._fresh(o) for o in self._objects[target["kind"]].list(scope.namespace)]
        selector = target.get("selector")
        scope.selected = [
            o
            for o in objects
            if not o["metadata"].get("deletionTimestamp")
            and matches(selector, o["metadata"].get("labels") or {})
        ]
        for obj in objects:
            change = change_of(obj)
            if change is None:
                continue
            if change.uid == scope.uid and change.attempt == scope.attempt:
                scope.changed.append((obj, change))
            elif change.uid != scope.uid and self._in_progress(change.uid):
                scope.contested[obj["metadata"]["uid"]] = change.uid
        if scope.status.get("total") is None:
            await self._start(scope)
        return True

    def _fresh(self, cached: Object) -> Object:
        """``cached``, or this process's newer copy while the cache has not caught up (for at
        most :data:`WRITTEN_TTL` seconds: by then it has, or the object is gone)."""
        uid = cached["metadata"]["uid"]
        entry = self._written.get(uid)
        if entry is None:
            return cached
        written, at = entry
        if _same_change(cached, written) or time.monotonic() - at > WRITTEN_TTL:
            del self._written[uid]
            return cached
        return written

    async def _start(self, scope: RolloutScope) -> None:
        """Plan the rollout and assess its risk: blast radius, the scope's health, the guard's
        budget; a blast radius over ``spec.approval`` waits for a person."""
        candidates = self._candidates(scope)
        total, batches = len(candidates), len(scope.spec["batches"])
        scope.status.update(total=total, currentBatch=0, updated=0, batches=[])
        scope.status.setdefault("phase", "Progressing")  # or Paused, by a command first
        kind = scope.spec["target"]["kind"]
        scope.event(
            "Normal",
            "Started",
            f"{total} {kind}(s) to move to {scope.version} in at most {batches} batch(es)",
        )
        if scope.contested:
            others = [o for o in scope.selected if o["metadata"]["uid"] in scope.contested]
            scope.event(
                "Warning",
                "Contested",
                f"{len(others)} selected object(s) are being moved by another rollout and are "
                f"left out: {_names(others)}",
            )
        assessment = await self._assess(scope, candidates)
        scope.status["assessment"] = assessment
        if assessment["decision"] == "NeedsApproval" and scope.phase == "Progressing":
            scope.status.update(phase="Paused", pausedReason="NeedsApproval")
            scope.event("Warning", "NeedsApproval", f"{assessment['reason']}: resume to approve")

    async def _assess(self, scope: RolloutScope, candidates: list[Object]) -> Object:
        kind = scope.spec["target"]["kind"]
        if kind == "Cluster":
            clusters = {o["metadata"]["name"] for o in candidates}
        else:
            clusters = {str(o["spec"].get("clusterRef", {}).get("name")) for o in candidates}
        nodes = sum(1 for o in candidates if (o.get("status") or {}).get("nodeName"))
        assessment: Object = {
            "objects": len(candidates),
            "clusters": len(clusters),
            "nodes": nodes,
            "notReady": sum(1 for o in scope.selected if not ready(o)),
            "decision": "Allow",
            "reason": "within the approval limits",
            "assessedAt": now(),
        }
        approval = scope.spec.get("approval") or {}
        over = [
            f"{assessment[what]} {what} (approval needed above {approval[limit]})"
            for what, limit in (("objects", "aboveObjects"), ("clusters", "aboveClusters"))
            if approval.get(limit) is not None and assessment[what] > approval[limit]
        ]
        if self._guard is not None:
            verdict = await self._guard.assess(self._request(scope, 0))
            assessment["guard"] = verdict.reason[:1024]
            if not verdict.allowed:
                assessment.update(decision="Deny", reason="the guard refuses the first batch now")
        if over:
            assessment.update(decision="NeedsApproval", reason="; ".join(over))
        return assessment

    def _in_progress(self, uid: str) -> bool:
        """Whether the rollout of ``uid`` exists and has not finished."""
        return any(
            (r.get("status") or {}).get("phase") not in FINISHED
            for r in self._rollouts.by_index(BY_UID, uid)
        )

    def _candidates(self, scope: RolloutScope) -> list[Object]:
        """Selected objects this run has not changed, that are not at the version yet, and
        that no other unfinished rollout has changed (two rollouts never move one object at
        once: this one waits until the other is done with it)."""
        changed = {obj["metadata"]["uid"] for obj, _ in scope.changed}
        return [
            o
            for o in scope.selected
            if o["metadata"]["uid"] not in changed
            and o["metadata"]["uid"] not in scope.contested
            and o["spec"].get("packageVersion") != scope.version
        ]

    # -- advance ------------------------------------------------------------------------------

    async def advance(self, scope: RolloutScope) -> bool:
        if scope.phase == "Progressing":
            await self._progress(scope)
        if scope.phase == "RollingBack":
            await self._roll_back(scope)
        scope.status["updated"] = len(scope.changed)
        for entry in scope.status.get("batches") or []:
            members = scope.members(entry["index"])
            entry["changed"] = len(members)
            entry["ready"] = sum(1 for o in members if self._healthy(scope, o))
        return True

    async def _progress(self, scope: RolloutScope) -> None:
        """Move the current batch on as far as it can go now; on to the next while each
        passes at once."""
        steps: dict[str, Callable[[RolloutScope], Awaitable[bool]]] = {
            "Pending": self._begin,
            "Waiting": self._begin,
            "Verifying": self._verify,
            "Analyzing": self._analyze,
            "Pausing": self._pause,
        }
        while scope.phase == "Progressing":
            step = steps.get(scope.batch["state"])
            if step is None or not await step(scope):
                return

    async def _begin(self, scope: RolloutScope) -> bool:
        """Health of the scope before the batch; then record the batch as started."""
        batch, options = scope.batch, scope.spec.get("healthCheck") or {}
        batch["size"] = self._size(scope)
        down = [o for o in scope.selected if not ready(o)]
        limit = int(options.get("maxUnavailable", 0))
        if len(down) > limit and not batch.get("skipped"):
            message = (
                f"{len(down)} of {len(scope.selected)} selected objects are not Ready (at most "
                f"{limit} may be): {_names(down)}"
            )
            scope.unhealthy = ("TooManyUnavailable", message)
            if batch["state"] != "Waiting":
                scope.event("Warning", "ScopeUnhealthy", f"batch {scope.index} waits: {message}")
            batch.update(state="Waiting", message=message)
            scope.requeue(self._options.poll_interval)
            return False
        scope.unhealthy = None
        if self._guard is not None:
            verdict = await self._guard.acquire(self._request(scope, scope.index))
            if not verdict.allowed:
                message, retry = held(verdict, f"batch {scope.index}", at_least=1, at_most=30)
                if batch["state"] != "Waiting" or batch.get("message") != message:
                    scope.event("Warning", GUARD_DENIED, message)
                batch.update(state="Waiting", message=message)
                scope.requeue(retry)
                return False
        batch.update(state="Verifying", startedAt=now(), message="")
        await scope.persist()  # the batch is started before any object of it is changed
        return True

    def _request(self, scope: RolloutScope, index: int) -> RiskRequest:
        """The guard's request for batch ``index`` of this run: one key per batch, stable
        across restarts, so asking again after a crash spends nothing."""
        return RiskRequest(
            action="RolloutBatch",
            id=f"{scope.uid}/{scope.attempt}/{index}",
            target=f"Rollout {scope.key} batch {index}",
        )

    async def _release(self, scope: RolloutScope, outcome: Outcome) -> None:
        if self._guard is not None:
            await self._guard.release(self._request(scope, scope.index), outcome)

    async def _verify(self, scope: RolloutScope) -> bool:
        """Change the batch's objects (those not changed yet), then wait for all to be Ready
        at the new version."""
        index, batch = scope.index, scope.batch
        if not await self._apply(scope, index):
            return False
        members = scope.members(index)
        if await self._failed(scope, members):
            return False
        waiting = [o for o in members if not self._healthy(scope, o)]
        filled = len(members) >= batch["size"] or not self._candidates(scope)
        if batch.get("skipped") or (filled and not waiting):
            if scope.spec.get("analysis") and not batch.get("skipped"):
                batch.update(state="Analyzing", analysisStartedAt=now())
            else:
                await self._passed(scope)
            return True
        timeout = int((scope.spec.get("healthCheck") or {}).get("timeoutSeconds", 600))
        elapsed = seconds_since(batch.get("startedAt"))
        if elapsed >= timeout:
            await self._abort(
                scope,
                f"batch {index}: {len(waiting)} of {len(members)} not Ready at "
                f"{scope.version} within {timeout}s: {_names(waiting)}",
            )
            return False
        batch["message"] = f"{len(members) - len(waiting)} of {batch['size']} Ready"
        scope.requeue(min(self._options.poll_interval, max(timeout - elapsed, 0.1)))
        return False

    async def _analyze(self, scope: RolloutScope) -> bool:
        """Take the analysis' measurements as they fall due; abort on too many failures,
        pause when too many could not be taken."""
        index, batch = scope.index, scope.batch
        if await self._failed(scope, scope.members(index)):
            return False
        analysis = scope.spec["analysis"]
        interval, count = int(analysis["intervalSeconds"]), int(analysis["count"])
        limit = int(analysis.get("failureLimit", 0))
        due = (int(batch.get("measured") or 0) + 1) * interval
        elapsed = seconds_since(batch.get("analysisStartedAt"))
        if elapsed < due:
            scope.requeue(due - elapsed)
            return False
        if self._metrics is None:
            taken = [_error(m["name"], "no metric reader configured") for m in analysis["metrics"]]
        else:
            taken = await measure_round(self._metrics, analysis)
        failed = [m for m in taken if m["phase"] == "Failed"]
        errors = [m for m in taken if m["phase"] == "Error"]
        batch["measured"] = int(batch.get("measured") or 0) + 1
        batch["failedMeasurements"] = int(batch.get("failedMeasurements") or 0) + len(failed)
        batch["errorMeasurements"] = int(batch.get("errorMeasurements") or 0) + len(errors)
        batch["measurements"] = (list(batch.get("measurements") or []) + taken)[-MEASUREMENTS_MAX:]
        if batch["failedMeasurements"] > limit:
            worst = failed[-1] if failed else {"metric": "?", "message": ""}
            await self._abort(
                scope,
                f"batch {index}: metric {worst['metric']} failed "
                f"{batch['failedMeasurements']} time(s) (at most {limit} allowed): "
                f"{worst['message']}",
            )
            return False
        if batch["errorMeasurements"] > limit:
            message = (
                f"batch {index}: {batch['errorMeasurements']} measurement(s) could not be "
                f"taken: {errors[-1]['message'] if errors else ''}"
            )
            batch["message"] = message
            scope.status.update(phase="Paused", pausedReason="AnalysisInconclusive")
            scope.event("Warning", "AnalysisInconclusive", message + "; resume to measure again")
            return False
        if batch["measured"] >= count:
            await self._passed(scope)
            return True
        scope.requeue(max(interval - (elapsed - due), 0.1))
        return False

    async def _passed(self, scope: RolloutScope) -> None:
        await self._release(scope, "Succeeded")
        batch = scope.batch
        batch.update(state="Pausing", finishedAt=now(), message="")
        how = "skipped by a person" if batch.get("skipped") else "passed"
        scope.event(
            "Normal",
            "BatchPassed",
            f"batch {scope.index} ({len(scope.members(scope.index))}) {how}",
        )

    async def _pause(self, scope: RolloutScope) -> bool:
        """The batch's pause and manual gate; then the next batch, or done."""
        index, batch = scope.index, scope.batch
        spec = scope.spec["batches"][min(index, len(scope.spec["batches"]) - 1)]
        if spec.get("manualGate") and not batch.get("approved") and not batch.get("skipped"):
            batch["message"] = "waiting for a person: kokpit rollout resume"
            scope.status.update(phase="Paused", pausedReason="AwaitingApproval")
            scope.event("Normal", "AwaitingApproval", f"batch {index} passed; resume to go on")
            return False
        left = int(spec.get("pauseSeconds", 0)) - seconds_since(batch.get("finishedAt"))
        if left > 0 and not batch.get("skipped"):
            batch["message"] = f"pausing {int(left)}s"
            scope.requeue(left)
            return False
        batch.update(state="Skipped" if batch.get("skipped") else "Succeeded", message="")
        if index + 1 >= len(scope.spec["batches"]) or not self._candidates(scope):
            scope.phase = "Succeeded"
            others = f"; {len(scope.contested)} left to another rollout" if scope.contested else ""
            scope.event(
                "Normal",
                "Succeeded",
                f"{len(scope.changed)} object(s) moved to {scope.version}{others}",
            )
            return False
        scope.status["currentBatch"] = index + 1
        return True

    # -- changes ------------------------------------------------------------------------------

    def _size(self, scope: RolloutScope) -> int:
        """Objects the current batch moves: its planned size, the last batch everything
        left."""
        index, batches = scope.index, scope.spec["batches"]
        if index >= len(batches) - 1:
            return len(scope.members(index)) + len(self._candidates(scope))
        sizes = planned_sizes([b["size"] for b in batches], int(scope.status.get("total") or 0))
        return sizes[index]

    async def _apply(self, scope: RolloutScope, index: int) -> bool:
        """Change the batch's objects not changed yet, up to its size; False if the API
        server refused some (the batch says why)."""
        batch = scope.batch
        if index >= len(scope.spec["batches"]) - 1:
            batch["size"] = self._size(scope)  # the last batch takes what joined since
        room = int(batch["size"]) - len(scope.members(index))
        members = next_members(self._candidates(scope), room)
        if not members:
            return True
        semaphore = asyncio.Semaphore(self._options.max_concurrent_changes)

        async def change(obj: Object) -> tuple[Object, Change] | None:
            mark = Change(scope.uid, scope.attempt, index, str(obj["spec"]["packageVersion"]))
            async with semaphore:
                patched = await self._patch(scope, obj, scope.version, mark)
            return None if patched is None else (patched, mark)

        results = await asyncio.gather(*(change(o) for o in members), return_exceptions=True)
        done = [r for r in results if isinstance(r, tuple)]
        refused = [r for r in results if isinstance(r, ApiError)]
        scope.changed.extend(done)
        if len(done) < len(members):
            scope.requeue(1)  # conflicts: the cache was behind; look again with it
        if done:
            scope.event(
                "Normal",
                "BatchApplied",
                f"batch {index}: {_names([o for o, _ in done])} moved to {scope.version}",
            )
        for error in (r for r in results if isinstance(r, BaseException)):
            if not isinstance(error, ApiError):
                raise error  # a bug or a cancellation, not the API server's answer
        if refused:
            self._refused(scope, refused[0], len(refused))
        return not refused

    def _refused(self, scope: RolloutScope, error: ApiError, count: int) -> None:
        """The API server refused changes: say why on the batch, and try again later (a
        person has to bind a role or fix an object; nothing is gained by hurrying)."""
        kind = scope.spec["target"]["kind"]
        if isinstance(error, Forbidden):
            why = (
                f"the Rollout-Operator may not change {kind}s in namespace {scope.namespace}: "
                "bind the ClusterRole kokpit-rollout-operator-namespaced there with a RoleBinding"
            )
        else:
            why = f"the API server refused the change of {count} {kind}(s): {error.message}"
        if scope.batch.get("message") != why:
            scope.event("Warning", "ChangeRefused", why)
        scope.batch["message"] = why[:4096]
        scope.requeue(30)

    async def _patch(
        self, scope: RolloutScope, obj: Object, version: str, mark: Change
    ) -> Object | None:
        """Set ``version`` and ``mark`` on ``obj`` in one request, if it did not change since
        it was read; None on a conflict or when it is gone."""
        meta = obj["metadata"]
        body = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "annotations": {CHANGE_ANNOTATION: str(mark)},
            },
            "spec": {"packageVersion": version},
        }
        try:
            patched = await self._client.patch(
                scope.target.resource, meta["name"], body, namespace=scope.namespace
            )
        except (Conflict, NotFound):
            return None  # changed or gone since it was read: the next pass sees it anew
        self._written[meta["uid"]] = (patched, time.monotonic())
        return patched

    def _healthy(self, scope: RolloutScope, obj: Object) -> bool:
        return scope.target.healthy_at(obj, scope.version)

    async def _failed(self, scope: RolloutScope, members: list[Object]) -> bool:
        """Abort if a keeper says the version failed on one of the batch's objects."""
        if scope.batch.get("skipped"):
            return False
        for obj in members:
            why = scope.target.failure(obj, scope.version)
            if why is not None:
                await self._abort(scope, f"batch {scope.index}: {obj['metadata']['name']}: {why}")
                return True
        return False

    # -- abort and roll back ------------------------------------------------------------------

    async def abort(self, scope: RolloutScope, reason: str) -> None:
        """A person's abort: stop, store why, and start moving back what this run changed
        (the batch did not fail by itself: the guard counts it as cancelled)."""
        await self._abort(scope, reason, "Cancelled")

    async def _abort(self, scope: RolloutScope, reason: str, outcome: Outcome = "Failed") -> None:
        batch = scope.batch
        if batch["state"] in ("Verifying", "Analyzing"):
            await self._release(scope, outcome)
        if batch["state"] not in ("Succeeded", "Skipped"):
            batch.update(state="Failed", finishedAt=now(), message=reason[:4096])
        scope.status.update(
            phase="RollingBack", abortReason=reason[:4096], abortedAt=now(), pausedReason=None
        )
        scope.event("Warning", "Aborted", reason)
        await scope.persist()  # the abort is stored before anything is moved back

    async def _roll_back(self, scope: RolloutScope) -> None:
        """Move each changed object back to the version in its mark; done when all are Ready
        there, or when the health timeout has passed (then say which are not)."""
        moved = 0
        for obj, mark in scope.changed:
            if obj["spec"].get("packageVersion") != scope.version:
                continue  # back already, or moved on by someone else: not ours to touch
            try:
                if await self._patch(scope, obj, mark.previous, mark) is None:
                    scope.requeue(1)
            except ApiError as error:
                self._refused(scope, error, 1)
                continue
            moved += 1
        if moved:
            scope.event("Normal", "RollingBack", f"{moved} object(s) moved back")
        target = scope.target
        behind = [
            obj
            for obj, mark in scope.changed
            if obj["spec"].get("packageVersion") in (scope.version, mark.previous)
            and not target.healthy_at(obj, mark.previous)
        ]
        if not behind:
            scope.phase = "Aborted"
            scope.behind = ""
            scope.event(
                "Normal", "RolledBack", f"{len(scope.changed)} object(s) back on their version"
            )
            return
        timeout = int((scope.spec.get("healthCheck") or {}).get("timeoutSeconds", 600))
        if seconds_since(scope.status.get("abortedAt")) >= timeout:
            scope.phase = "Aborted"
            scope.behind = f"not Ready on their previous version: {_names(behind)}"
            scope.event(
                "Warning",
                "RollbackIncomplete",
                f"{len(behind)} object(s) not Ready on their previous version within "
                f"{timeout}s: {_names(behind)}",
            )
            return
        scope.requeue(self._options.poll_interval)


def _same_change(a: Object, b: Object) -> bool:
    """Whether two copies of an object carry the same mark and package version."""

    def change(obj: Object) -> tuple[Any, Any]:
        mark = (obj["metadata"].get("annotations") or {}).get(CHANGE_ANNOTATION)
        return mark, obj["spec"].get("packageVersion")

    return change(a) == change(b)


def _error(metric: str, message: str) -> Object:
    return {"metric": metric, "phase": "Error", "message": message, "at": now()}


def _names(objs: list[Object]) -> str:
    names = sorted(str(o["metadata"]["name"]) for o in objs)
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")
