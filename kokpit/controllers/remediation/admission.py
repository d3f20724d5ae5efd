"""Admission: which Pending remediations of a policy may start, and the policy's status.

Until the risk guard exists, each policy holds two limits (``spec.stormStop``):

- at most ``maxConcurrent`` of its remediations in progress (Cordoning to Uncordoning) at once;
- in a scope whose share of healthy nodes is below ``minHealthyPercent`` nothing starts
  (:mod:`.storm`): the policy's ``StormStopped`` condition and an Event say which scopes, with
  their counts. Remediations already under way go on; new ones wait, Pending, and no repair
  action runs for them.

The policy's reconcile is the only place that admits its remediations (a controller reconciles
one key at a time), so two admissions never race past the limit. What it admitted is also
remembered until the cache shows it, so a cache that lags its own writes cannot over-admit;
a restarted process forgets that, and counts from the API server's state again. A remediation
starts only once its scope's unhealthy nodes have stopped growing for ``admission_delay``
(:mod:`.quiet`): the faults of a storm arrive over seconds, and all are counted before any of
them starts. A scope already below ``minHealthyPercent`` is stopped at once, without waiting
for the rest of its storm. A pass counts each scope's health once, and admits at once what it
admits.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable
from typing import Any

from kokpit.api.conditions import get, set_condition
from kokpit.api.v1alpha1 import REMEDIATION_POLICIES, REMEDIATIONS
from kokpit.api.v1alpha1.remediationpolicy import STORM_STOPPED
from kokpit.controllers.remediation import metrics, storm
from kokpit.controllers.remediation.options import RemediationOptions
from kokpit.controllers.remediation.quiet import QuietPeriod
from kokpit.controllers.remediation.scope import IN_PROGRESS
from kokpit.runtime import (
    Client,
    ClusterCache,
    ClusterNotReady,
    Conflict,
    EventRecorder,
    NotFound,
    PatchHelper,
    Request,
    Result,
    Store,
)
from kokpit.runtime.resources import NODES

Object = dict[str, Any]
#: The index of remediations by their policy (namespace/name).
BY_POLICY = "policy"


def by_policy(remediation: Object) -> list[str]:
    meta = remediation["metadata"]
    return [f"{meta['namespace']}/{remediation['spec']['policyRef']['name']}"]


class Admission:
    """The reconciler of RemediationPolicies."""

    def __init__(
        self,
        client: Client,
        clusters: ClusterCache,
        *,
        policies: Store,
        remediations: Store,
        faults: Store,
        machines: Store,
        recorder: EventRecorder,
        options: RemediationOptions,
        quiet: QuietPeriod | None = None,
    ) -> None:
        self._client = client
        self._clusters = clusters
        self._policies = policies
        self._remediations = remediations
        self._faults = faults
        self._machines = machines
        self._recorder = recorder
        self._options = options
        self._quiet = quiet or QuietPeriod(options.admission_delay)
        #: Per policy: remediations this process admitted, until the cache shows them.
        self._admitted: dict[str, set[str]] = {}

    async def reconcile(self, request: Request) -> Result:
        cached = self._policies.get(request.key)
        if cached is None:
            self._admitted.pop(request.key, None)
            return Result()
        policy = copy.deepcopy(cached)
        members = self._remediations.by_index(BY_POLICY, request.key)
        phases = {_key(r): (r.get("status") or {}).get("phase") for r in members}
        admitted = {k for k in self._admitted.get(request.key, set()) if phases.get(k) == "Pending"}
        self._admitted[request.key] = admitted
        in_progress = {k for k, phase in phases.items() if phase in IN_PROGRESS} | admitted
        pending = sorted(
            (r for r in members if phases[_key(r)] == "Pending" and _key(r) not in admitted),
            key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"]),
        )
        limits = policy["spec"].get("stormStop") or {}
        max_concurrent = int(limits.get("maxConcurrent", 5))
        min_healthy = int(limits.get("minHealthyPercent", 70))
        stopped: dict[storm.Scope, storm.Health] = {}
        waiting = False
        # Each pending remediation's scope and its health, counted once per cluster and pass;
        # and how long until each scope has been quiet for the admission delay.
        judged: list[tuple[Object, storm.Health]] = []
        healths: dict[str, dict[storm.Scope, storm.Health]] = {}
        quiet_in: dict[storm.Scope, float] = {}
        for remediation in pending:
            verdict = await self._health(remediation, limits.get("scopeLabel"), healths)
            if verdict is None:  # the cluster's nodes are not known yet
                waiting = True
                continue
            judged.append((remediation, verdict))
            if verdict.scope not in quiet_in:
                quiet_in[verdict.scope] = self._quiet.observe(verdict)
        to_admit: list[Object] = []
        recheck = self._options.admission_recheck
        for remediation, verdict in judged:
            if len(in_progress) + len(to_admit) >= max_concurrent:
                waiting = True
                break
            if verdict.below(min_healthy):  # a storm already, whatever else is arriving
                stopped[verdict.scope] = verdict
                waiting = True
                self._recorder.event(
                    remediation,
                    "Normal",
                    "StormStopped",
                    f"waiting: {verdict.describe(min_healthy)}",
                )
                continue
            if quiet_in[verdict.scope] > 0:  # its storm may still be arriving
                # Back the moment the scope has been quiet for the delay, not a recheck later.
                recheck = min(recheck, quiet_in[verdict.scope])
                waiting = True
                continue
            to_admit.append(remediation)
        # Admitted at once, and the policy's status with them: one write each, none waiting
        # for another's (a pass is the wait of the remediations that arrive during it). The
        # status counts the admissions as made; one that conflicted is counted again next pass.
        # Every admission made is remembered before an error of another is raised: one the
        # cache still shows Pending must not be admitted again past maxConcurrent.
        in_progress |= {_key(r) for r in to_admit}
        *results, written = await asyncio.gather(
            *(self._admit(r) for r in to_admit),
            self._write_status(policy, len(in_progress), stopped.values(), min_healthy),
            return_exceptions=True,
        )
        for remediation, done in zip(to_admit, results, strict=True):
            if done is True:
                admitted.add(_key(remediation))
        for error in (r for r in (*results, written) if isinstance(r, BaseException)):
            raise error
        if not written:  # the next pass writes it
            waiting, recheck = True, min(recheck, self._options.poll_interval)
        if waiting:
            return Result(requeue_after=recheck)
        return Result()

    async def _health(
        self,
        remediation: Object,
        scope_label: str | None,
        known: dict[str, dict[storm.Scope, storm.Health]],
    ) -> storm.Health | None:
        """The health of the scope the remediation's node is in (None: not known yet), from
        ``known`` when this pass has counted that cluster's scopes already."""
        status = remediation.get("status") or {}
        namespace = remediation["metadata"]["namespace"]
        cluster = f"{namespace}/{status.get('clusterName') or ''}"
        try:
            accessor = await self._clusters.get(cluster)
        except ClusterNotReady:
            return None
        informer = accessor.informer(NODES, transform=storm.node_summary)
        if not informer.synced.is_set():
            return None
        node = informer.store.get(str(status.get("nodeName") or ""))
        scope = storm.scope_of(cluster, node, scope_label)
        if cluster not in known:
            faulty = self._faulty(namespace, cluster)
            known[cluster] = storm.healths(cluster, informer.store.list(), faulty, scope_label)
        # A scope without nodes (its node gone) has none unhealthy: it is not stopped.
        return known[cluster].get(scope) or storm.Health(scope, 0)

    def _faulty(self, namespace: str, cluster: str) -> set[str]:
        """The nodes of ``cluster`` with an Active fault (of any policy, any type)."""
        names: set[str] = set()
        for fault in self._faults.list(namespace):
            status = fault.get("status") or {}
            if status.get("state") != "Active":
                continue
            machine = self._machines.get(f"{namespace}/{fault['spec']['machineRef']['name']}")
            spec = (machine or {}).get("spec") or {}
            name = (spec.get("clusterRef") or {}).get("name")
            if f"{namespace}/{status.get('clusterName') or name}" != cluster:
                continue
            node = status.get("nodeName") or ((machine or {}).get("status") or {}).get("nodeName")
            names.add(str(node or fault["spec"]["machineRef"]["name"]))
        return names

    async def _admit(self, remediation: Object) -> bool:
        meta = remediation["metadata"]
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": {"phase": "Cordoning"},
        }
        try:
            await self._client.patch(
                REMEDIATIONS, meta["name"], patch, namespace=meta["namespace"], subresource="status"
            )
        except (Conflict, NotFound):
            return False  # changed meanwhile: the next pass decides again
        self._recorder.event(remediation, "Normal", "Admitted", "the workflow may start")
        return True

    async def _write_status(
        self,
        policy: Object,
        in_progress: int,
        stopped: Iterable[storm.Health],
        min_healthy: int,
    ) -> bool:
        """Write the policy's status; False when it changed meanwhile (not written)."""
        helper = PatchHelper(self._client, REMEDIATION_POLICIES, policy)
        status = policy.setdefault("status", {})
        generation = policy["metadata"].get("generation")
        was = get(status.get("conditions") or [], STORM_STOPPED) or {}
        reports = sorted(h.describe(min_healthy) for h in stopped)
        if reports:
            message = "no remediation starts in " + "; ".join(reports)
            condition = ("True", "BelowMinHealthy", message)
        else:
            condition = ("False", "Healthy", "every scope with waiting remediations is healthy")
        status["conditions"] = set_condition(
            status.get("conditions") or [],
            STORM_STOPPED,
            condition[0],  # type: ignore[arg-type]
            condition[1],
            condition[2][:32768],
            generation=generation,
        )
        status.update(inProgress=in_progress, observedGeneration=generation)
        try:
            await helper.patch(policy)
        except NotFound:
            return True
        except Conflict:
            # Read before this process's last write of it reached the cache; the status is
            # recomputed on every pass, so the next one writes it.
            return False
        if reports:
            self._recorder.event(policy, "Warning", "StormStopped", condition[2][:1024])
            if was.get("status") != "True":
                meta = policy["metadata"]
                metrics.STORM_STOPS.labels(meta["namespace"], meta["name"]).inc()
        elif was.get("status") == "True":
            self._recorder.event(policy, "Normal", "StormOver", condition[2])
        return True


def _key(obj: Object) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}"
