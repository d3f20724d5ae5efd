"""The Rollout-Operator: moves Machines and Clusters to a package version in gray-scale
batches (see :mod:`kokpit.api.v1alpha1.rollout` for the lifecycle).

One controller reconciles Rollouts with the runtime's outline: a person's command
(:mod:`.commands`), what the rollout selects and changed (:meth:`.Progress.load`), the batch
workflow (:mod:`.phases`), then conditions (:mod:`.status`). It never changes a host or a
control plane itself: it sets ``spec.packageVersion`` and reads what the Machine-Operator and
the Cluster-Operator report, so every change still goes through their steps, health checks,
rollbacks and the guard.

Machines and Clusters wake the unfinished rollouts of their namespace, so a batch moves on as
soon as its last object is Ready, not at the next poll. The state of every rollout is its
status and the marks on what it changed: the process remembers nothing that matters.
"""

from __future__ import annotations

from typing import Any

from kokpit.api.v1alpha1 import CLUSTERS, MACHINES, ROLLOUTS
from kokpit.controllers.rollout import status
from kokpit.controllers.rollout.analysis import MetricReader
from kokpit.controllers.rollout.commands import Commands
from kokpit.controllers.rollout.options import RolloutOptions
from kokpit.controllers.rollout.phases import BY_UID, Progress
from kokpit.controllers.rollout.scope import FINISHED, RolloutScope
from kokpit.providers.guard import Guard
from kokpit.runtime import (
    Controller,
    ControllerOptions,
    EventRecorder,
    Manager,
    ObjectReconciler,
    Outline,
    Request,
)
from kokpit.runtime.informer import Informer

Object = dict[str, Any]


class RolloutOperator:
    """The operator's parts, wired."""

    def __init__(
        self,
        manager: Manager,
        recorder: EventRecorder,
        metrics: MetricReader | None,
        guard: Guard | None,
        options: RolloutOptions,
    ) -> None:
        cache = manager.cache
        self.rollouts = cache.informer(ROLLOUTS)
        self.rollouts.add_indexers({BY_UID: lambda r: [r["metadata"]["uid"]]})
        self.machines = cache.informer(MACHINES)
        self.clusters = cache.informer(CLUSTERS)
        objects = {"Machine": self.machines.store, "Cluster": self.clusters.store}
        self.progress = Progress(
            manager.client, self.rollouts.store, objects, metrics, guard, options
        )
        outline: Outline[RolloutScope] = Outline(
            resource=ROLLOUTS,
            finalizer=None,  # deleting a rollout leaves every object where it is
            scope=RolloutScope,
            phases=(Commands(self.progress).apply, self.progress.load, self.progress.advance),
            delete_phases=(),
            update_status=status.update,
        )
        self.reconciler = ObjectReconciler(manager.client, self.rollouts.store, recorder, outline)


def setup(
    manager: Manager,
    recorder: EventRecorder,
    metrics: MetricReader | None = None,
    guard: Guard | None = None,
    options: RolloutOptions | None = None,
) -> RolloutOperator:
    """Create the operator's controller and watches on ``manager``. ``metrics`` measures the
    analyses' queries (None: a rollout with an analysis pauses, saying none can be taken);
    ``guard`` is asked before each batch (``RolloutBatch``) and told how it ended."""
    options = options or RolloutOptions()
    op = RolloutOperator(manager, recorder, metrics, guard, options)
    workers = ControllerOptions(max_concurrent_reconciles=options.max_concurrent_reconciles)
    controller = Controller("rollout", op.reconciler, workers)
    controller.watch(op.rollouts, predicate=_request_changed)
    for objects in (op.machines, op.clusters):
        controller.watch(objects, _rollouts_of_namespace(op.rollouts))
    manager.add(controller)
    return op


def _rollouts_of_namespace(rollouts: Informer) -> Any:
    def mapper(obj: Object) -> list[Request]:
        namespace = obj["metadata"].get("namespace") or ""
        return [
            Request(namespace, r["metadata"]["name"])
            for r in rollouts.store.list(namespace)
            if (r.get("status") or {}).get("phase") not in FINISHED
        ]

    return mapper


def _request_changed(old: Object | None, new: Object) -> bool:
    """The workflow's own status writes need no reconcile of their own (it asks for the
    requeues it needs); a new rollout, a spec change or a command does."""
    if old is None:
        return True
    before, after = old["metadata"], new["metadata"]
    return any(before.get(k) != after.get(k) for k in ("annotations", "generation"))
