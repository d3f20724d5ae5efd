"""The guard in the caller's process, deciding against the RiskLedgers in the API server.

Every policy that names a request's action must allow it; they are asked in name order, and a
later refusal cancels the holds the earlier ones granted. One policy's ledger is written by one
task per process at a time, and the asks that arrive while it writes are decided together in
the next write (group commit): two hundred callers at once cost a few writes, not two hundred
conflicting ones. Across processes the ledger's resourceVersion decides: a write that lost the
race reads the ledger again and decides again, so no budget is ever spent twice.

It fails closed: a policy whose ledger is gone or is not its own allows nothing, and says so,
until a person resets the policy (``kokpit risk reset``, the annotation
:data:`~kokpit.api.v1alpha1.riskpolicy.RESET_ANNOTATION`).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from kokpit.api.v1alpha1 import RISK_LEDGERS, RISK_POLICIES
from kokpit.api.v1alpha1.riskledger import DECISIONS_MAX
from kokpit.api.v1alpha1.riskpolicy import RESET_ANNOTATION
from kokpit.providers.guard import RiskRequest, Verdict, budget
from kokpit.providers.guard.budget import Answer, Ask, Outcome
from kokpit.runtime import (
    AlreadyExists,
    Cache,
    Client,
    Conflict,
    EventRecorder,
    NotFound,
    PatchType,
    Resource,
)
from kokpit.runtime.log import get_logger
from kokpit.runtime.reconcile import owner_reference
from kokpit.runtime.store import Store

Object = dict[str, Any]

#: Writes of one batch before the guard gives up (each lost to another process's write).
MAX_CONFLICTS = 20


class ScopeHealth(Protocol):
    """How many nodes a scope has and how many are unavailable now (for maxUnavailablePercent);
    None when the caller cannot tell (the policy then denies)."""

    def count(self, scope: str, key: str, label: str | None) -> tuple[int, int] | None: ...


@dataclass
class _Op:
    request: RiskRequest
    #: None: acquire; else the outcome of a release.
    outcome: Outcome | None
    future: asyncio.Future[Answer]


class LocalGuard:
    """See the module docstring. ``policies`` is an informer's store of RiskPolicies (which
    policies govern an action, and what they say); ``ledgers``, if given, an informer's store
    of RiskLedgers. Decisions are made on what the stores hold and written conditionally; a
    write that finds them stale (and a ledger they say is lost) is decided again on a fresh
    read, so a cache saves reads and never changes an answer that is written."""

    def __init__(
        self,
        client: Client,
        policies: Store,
        requester: str,
        *,
        ledgers: Store | None = None,
        recorder: EventRecorder | None = None,
        health: ScopeHealth | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._policies = policies
        self._ledgers = ledgers
        self._requester = requester
        self._recorder = recorder
        self._health = health
        self._clock = clock
        self._pending: dict[str, list[_Op]] = {}
        #: Per ledger: the versions this guard's writes replaced, and its last write.
        self._own: dict[str, tuple[set[str], Object]] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        self._log = get_logger("kokpit.guard")

    @classmethod
    def on(
        cls,
        cache: Cache,
        requester: str,
        *,
        recorder: EventRecorder | None = None,
        health: ScopeHealth | None = None,
    ) -> LocalGuard:
        """A guard reading policies and ledgers through ``cache`` (a manager's), asking as
        ``requester`` (who the audit trail says asked)."""
        policies = cache.informer(RISK_POLICIES).store
        ledgers = cache.informer(RISK_LEDGERS).store
        return cls(
            cache.client, policies, requester, ledgers=ledgers, recorder=recorder, health=health
        )

    async def acquire(self, request: RiskRequest) -> Verdict:
        names = self._governing(request)
        if not names:
            return Verdict(True, f"no RiskPolicy governs {request.action}")
        granted: list[str] = []
        reasons: list[str] = []
        for name in names:
            answer = await self._submit(name, request, None)
            if not answer.allowed:
                for earlier in granted:
                    await self._submit(earlier, request, "Cancelled")
                return Verdict(False, f"RiskPolicy {name}: {answer.reason}", answer.retry_after)
            granted.append(name)
            reasons.append(f"RiskPolicy {name}: {answer.reason}")
        return Verdict(True, "; ".join(reasons))

    async def assess(self, request: RiskRequest) -> Verdict:
        """What :meth:`acquire` would answer now, recording nothing (a dry run: to check a
        change before making it). Decided on what the caches hold."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        reasons = []
        for name in self._governing(request):
            policy = await self._read(RISK_POLICIES, self._policies, name, False)
            if policy is None:
                continue
            ledger = self._own_write(name) or await self._read(
                RISK_LEDGERS, self._ledgers, name, False
            )
            spec = policy["spec"]
            key = _scope_key(spec, request)
            if key is None:
                return Verdict(False, f"RiskPolicy {name}: {request.target} names no Cluster")
            entries = ((ledger or {}).get("status") or {}).get("scopes") or []
            entry = next((e for e in entries if e["key"] == key), {"key": key})
            budget.prune(spec, entry, now)
            answer = budget.decide(spec, entry, self._ask(spec, key, request), now)
            if not answer.allowed:
                return Verdict(False, f"RiskPolicy {name}: {answer.reason}", answer.retry_after)
            reasons.append(f"RiskPolicy {name}: {answer.reason}")
        return Verdict(True, "; ".join(reasons) or f"no RiskPolicy governs {request.action}")

    async def release(self, request: RiskRequest, outcome: Outcome) -> None:
        for name in self._governing(request):
            await self._submit(name, request, outcome)

    # -- one writer per policy -------------------------------------------------------------

    def _governing(self, request: RiskRequest) -> list[str]:
        return sorted(
            p["metadata"]["name"]
            for p in self._policies.list()
            if request.action in ((p.get("spec") or {}).get("actions") or [])
        )

    async def _submit(self, policy: str, request: RiskRequest, outcome: Outcome | None) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(policy, []).append(_Op(request, outcome, future))
        writer = self._writers.get(policy)
        if writer is None or writer.done():
            self._writers[policy] = asyncio.create_task(self._write(policy), name=f"guard-{policy}")
        return await future

    async def _write(self, policy: str) -> None:
        while batch := self._pending.pop(policy, []):
            try:
                answers = await self._commit(policy, batch)
            except Exception as e:  # an answer for every caller, whatever happened
                self._log.warning("guard write failed", extra={"policy": policy, "error": repr(e)})
                answers = [Answer(False, f"the guard could not record the decision: {e}")] * len(
                    batch
                )
            for op, answer in zip(batch, answers, strict=True):
                if not op.future.done():
                    op.future.set_result(answer)

    async def _commit(self, name: str, batch: list[_Op]) -> list[Answer]:
        fresh = False  # read from the caches until a write finds them stale
        for _ in range(MAX_CONFLICTS):
            policy = await self._read(RISK_POLICIES, self._policies, name, fresh)
            if policy is None:
                return [Answer(False, "the policy was deleted while deciding; ask again")] * len(
                    batch
                )
            ledger = await self._ledger(policy, fresh)
            if isinstance(ledger, str):  # fail closed
                if not fresh:
                    fresh = True  # never fail closed on what a cache says
                    continue
                for op in batch:
                    await self._event(policy, op.request, Answer(False, ledger), op.outcome)
                return [Answer(False, ledger)] * len(batch)
            reset = _pending_reset(policy)
            answers, changed = self._decide(policy, ledger, batch, reset is not None)
            if not changed and reset is None:
                # Releases of actions it never granted, or a denial repeated: nothing new.
                return answers
            read = ledger["metadata"].get("resourceVersion")
            try:
                written = await self._client.replace(RISK_LEDGERS, ledger, subresource="status")
            except (Conflict, NotFound):
                self._own.pop(name, None)
                fresh = True
                continue
            self._remember(name, read, written)
            if reset is not None:
                await self._patch_status(policy, {"reset": reset})
            for op, answer in zip(batch, answers, strict=True):
                await self._event(policy, op.request, answer, op.outcome)
            return answers
        return [Answer(False, "the ledger kept changing under this guard; ask again")] * len(batch)

    def _remember(self, name: str, read: str | None, written: Object) -> None:
        """This guard replaced version ``read`` of the ledger ``name`` by ``written``: until
        its cache shows ``written`` (or another writer's version), decide on ``written``.
        Without this the cache, a moment behind each write, would make every next write of a
        single writer conflict."""
        versions = self._own[name][0] if name in self._own else set()
        if read is not None:
            versions = versions | {read}
        self._own[name] = (versions, written)

    def _own_write(self, name: str) -> Object | None:
        """The ledger as this guard last wrote it, while its cache still shows a version that
        write replaced; None once the cache has caught up (or shows another writer's)."""
        own = self._own.get(name)
        if own is None:
            return None
        versions, latest = own
        cached = self._ledgers.get(name) if self._ledgers is not None else None
        if cached is None or cached["metadata"].get("resourceVersion") in versions:
            return copy.deepcopy(latest)
        del self._own[name]
        return None

    async def _read(
        self, resource: Resource, store: Store | None, name: str, fresh: bool
    ) -> Object | None:
        """``name`` from ``store`` (a copy: it is changed before it is written), or from the
        API server when ``fresh`` or not cached; None when it does not exist."""
        if not fresh and store is not None and (cached := store.get(name)) is not None:
            return copy.deepcopy(cached)
        try:
            return await self._client.get(resource, name)
        except NotFound:
            return None

    def _decide(
        self, policy: Object, ledger: Object, batch: list[_Op], reset: bool
    ) -> tuple[list[Answer], bool]:
        """Decide ``batch`` on ``ledger`` (changed in place); also whether it changed."""
        spec = policy["spec"]
        now = datetime.fromtimestamp(self._clock(), UTC)
        status = ledger.setdefault("status", {})
        entries = {e["key"]: e for e in status.get("scopes") or []}
        for entry in entries.values():
            budget.prune(spec, entry, now)
            if reset:
                budget.reset(entry, now)
        answers: list[Answer] = []
        changed = False
        decisions: list[Object] = status.get("decisions") or []
        for op in batch:
            key = _scope_key(spec, op.request)
            if key is None:
                answers.append(Answer(False, f"{op.request.target} names no Cluster"))
                continue
            entry = entries.get(key)
            if entry is None:
                entry = entries[key] = {"key": key}
                budget.prune(spec, entry, now)
            if op.outcome is not None:
                changed |= budget.release(spec, entry, op.request.id, op.outcome, now)
                answers.append(Answer(True, f"released: {op.outcome}"))
                continue
            ask = self._ask(spec, key, op.request)
            answer = budget.decide(spec, entry, ask, now)
            answers.append(answer)
            if answer.allowed and not answer.spent:
                continue  # asked again for what it holds (a drain's every pass): on record
            if not answer.allowed and _repeated(decisions, ask.id, answer.reason[:1024]):
                continue  # the same refusal as last time: on record already
            changed = True
            decisions.append(
                {
                    "at": budget.stamp(now),
                    "id": ask.id,
                    "action": ask.action,
                    "target": ask.target,
                    "requester": ask.requester,
                    "allowed": answer.allowed,
                    "reason": answer.reason[:1024],
                }
            )
        status["scopes"] = [e for e in entries.values() if not _empty(e)]
        status["decisions"] = decisions[-DECISIONS_MAX:]
        return answers, changed

    def _ask(self, spec: Object, key: str, request: RiskRequest) -> Ask:
        total = unavailable = None
        if spec.get("maxUnavailablePercent") is not None and self._health is not None:
            counted = self._health.count(spec.get("scope", "Fleet"), key, spec.get("domainLabel"))
            if counted is not None:
                total, unavailable = counted
        requester = request.requester or self._requester
        return Ask(request.id, request.action, request.target, requester, total, unavailable)

    async def _ledger(self, policy: Object, fresh: bool) -> Object | str:
        """The policy's ledger (created on first use), or why the guard must deny."""
        meta, status = policy["metadata"], policy.get("status") or {}
        name, uid = meta["name"], meta["uid"]
        known = status.get("ledgerUID")
        resetting = _pending_reset(policy) is not None
        ledger = None if fresh else self._own_write(name)
        if ledger is None:
            ledger = await self._read(RISK_LEDGERS, self._ledgers, name, fresh)
        if ledger is None:
            if known and not resetting:
                return (
                    f"its RiskLedger {name} was deleted: what was spent is unknown, so nothing "
                    f"is allowed until a person resets the policy (kokpit risk reset {name})"
                )
            body = {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "RiskLedger",
                "metadata": {"name": name, "ownerReferences": [owner_reference(policy)]},
                "spec": {"policyUID": uid},
            }
            try:
                ledger = await self._client.create(RISK_LEDGERS, body)
            except AlreadyExists:
                ledger = await self._client.get(RISK_LEDGERS, name)
        if ledger["spec"].get("policyUID") != uid:
            return (
                f"RiskLedger {name} belongs to another policy of this name; delete it and "
                f"reset the policy (kokpit risk reset {name})"
            )
        lid = ledger["metadata"]["uid"]
        if known and known != lid and not resetting:
            return (
                f"RiskLedger {name} was replaced (the policy's is {known}); nothing is allowed "
                f"until a person resets the policy (kokpit risk reset {name})"
            )
        if known != lid:
            await self._patch_status(policy, {"ledgerUID": lid})
        return ledger

    async def _patch_status(self, policy: Object, fields: Object) -> None:
        await self._client.patch(
            RISK_POLICIES,
            policy["metadata"]["name"],
            {"status": fields},
            patch_type=PatchType.MERGE,
            subresource="status",
        )

    async def _event(
        self, policy: Object, request: RiskRequest, answer: Answer, outcome: Outcome | None
    ) -> None:
        if self._recorder is None:
            return
        if outcome is not None:
            note = f"{request.action} of {request.target} ({request.id}): {outcome}"
            self._recorder.event(policy, "Normal", "Released", note)
            return
        verdict = "allowed" if answer.allowed else "denied"
        who = request.requester or self._requester
        asked = f"{request.action} of {request.target} ({request.id}) for {who}"
        note = f"{asked} {verdict}: {answer.reason}"
        self._recorder.event(
            policy,
            "Normal" if answer.allowed else "Warning",
            "Allowed" if answer.allowed else "Denied",
            note,
        )


def _scope_key(spec: Object, request: RiskRequest) -> str | None:
    scope = spec.get("scope", "Fleet")
    if scope == "Cluster":
        return request.cluster
    if scope == "FailureDomain":
        label = spec["domainLabel"]
        return request.labels.get(label) or f"(no {label})"
    return "*"


def _pending_reset(policy: Object) -> str | None:
    value = (policy["metadata"].get("annotations") or {}).get(RESET_ANNOTATION)
    return value if value and value != (policy.get("status") or {}).get("reset") else None


def _repeated(decisions: list[Object], id_: str, reason: str) -> bool:
    """Whether the last decision on record for ``id_`` is this same refusal (a caller waiting
    for a budget asks again and again; one record of the refusal is enough)."""
    for decision in reversed(decisions):
        if decision["id"] == id_:
            return not decision["allowed"] and decision["reason"] == reason
    return False


def _empty(entry: Object) -> bool:
    breaker = (entry.get("breaker") or {}).get("state", "Closed")
    return not (
        entry.get("grants")
        or entry.get("inFlight")
        or entry.get("failures")
        or entry.get("successes")
        or (entry.get("limit") or 1) > 1
        or breaker != "Closed"
    )
