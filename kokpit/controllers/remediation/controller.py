"""The Remediation operator: repairs the nodes whose faults the fault hub records.

Three controllers share one manager, one meta-cluster cache and one cache of business
clusters (Nodes, through :class:`~kokpit.runtime.ClusterCache`):

- ``remediation-start`` reconciles NodeFaults: an Active fault without a Remediation gets one,
  under the policy that selects it (:mod:`.start`, :mod:`.selection`);
- ``remediation-admission`` reconciles RemediationPolicies: which Pending remediations may
  start, under maxConcurrent and the storm stop, and the policy's status (:mod:`.admission`,
  :mod:`.storm`);
- ``remediation`` reconciles Remediations with the runtime's outline: a person's command
  (:mod:`.commands`), then the workflow (:mod:`.phases`, :mod:`.drain`), then conditions
  (:mod:`.status`). Deleting a Remediation gives back the node kokpit cordoned (finalizer).

What the process remembers (what admission admitted lately) only saves work; the state of every
remediation is its status (see :mod:`.phases` for why that is enough).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kokpit.api.v1alpha1 import CLUSTERS, MACHINES, NODE_FAULTS, REMEDIATION_POLICIES, REMEDIATIONS
from kokpit.controllers.remediation import status
from kokpit.controllers.remediation.admission import BY_POLICY, Admission, by_policy
from kokpit.controllers.remediation.commands import Commands
from kokpit.controllers.remediation.options import RemediationOptions
from kokpit.controllers.remediation.phases import Workflow
from kokpit.controllers.remediation.scope import FINALIZER, RemediationScope
from kokpit.controllers.remediation.start import Starter
from kokpit.controllers.remediation.storm import node_summary
from kokpit.providers.guard import Guard
from kokpit.providers.repair import Repairer
from kokpit.providers.repair.notify import EscalationNotifier
from kokpit.runtime import (
    ClusterCache,
    Controller,
    ControllerOptions,
    EventRecorder,
    Manager,
    ObjectReconciler,
    Outline,
    Request,
)
from kokpit.runtime.clustercache import ClusterMapper
from kokpit.runtime.resources import NODES

#: Remediations by the node they repair: namespace/cluster/node.
BY_NODE = "node"

Object = dict[str, Any]


def by_node(remediation: Object) -> list[str]:
    status = remediation.get("status") or {}
    if not status.get("nodeName"):
        return []
    namespace = remediation["metadata"]["namespace"]
    return [f"{namespace}/{status.get('clusterName')}/{status['nodeName']}"]


class RemediationOperator:
    """The operator's parts, wired."""

    def __init__(
        self,
        manager: Manager,
        cluster_cache: ClusterCache,
        repairers: Mapping[str, Repairer],
        recorder: EventRecorder,
        options: RemediationOptions,
        notifier: EscalationNotifier | None,
        guard: Guard | None,
    ) -> None:
        cache = manager.cache
        self.remediations = cache.informer(REMEDIATIONS)
        self.faults = cache.informer(NODE_FAULTS)
        self.policies = cache.informer(REMEDIATION_POLICIES)
        self.machines = cache.informer(MACHINES)
        self.clusters = cache.informer(CLUSTERS)
        self.remediations.add_indexers({BY_POLICY: by_policy, BY_NODE: by_node})
        self.cluster_cache = cluster_cache
        self.workflow = Workflow(
            manager.client,
            self.cluster_cache,
            faults=self.faults.store,
            machines=self.machines.store,
            policies=self.policies.store,
            cluster_objects=self.clusters.store,
            repairers=repairers,
            notifier=notifier,
            options=options,
            guard=guard,
        )
        commands = Commands(self.workflow)
        outline: Outline[RemediationScope] = Outline(
            resource=REMEDIATIONS,
            finalizer=FINALIZER,
            scope=RemediationScope,
            phases=(self.workflow.load, commands.apply, self.workflow.advance),
            delete_phases=(self.workflow.load, self.workflow.finalize),
            update_status=status.update,
        )
        self.reconciler = ObjectReconciler(
            manager.client, self.remediations.store, recorder, outline
        )
        self.starter = Starter(
            manager.client,
            self.faults.store,
            self.remediations.store,
            self.machines.store,
            self.policies.store,
        )
        self.admission = Admission(
            manager.client,
            self.cluster_cache,
            policies=self.policies.store,
            remediations=self.remediations.store,
            faults=self.faults.store,
            machines=self.machines.store,
            recorder=recorder,
            options=options,
        )


def setup(
    manager: Manager,
    cluster_cache: ClusterCache,
    repairers: Mapping[str, Repairer],
    recorder: EventRecorder,
    options: RemediationOptions | None = None,
    notifier: EscalationNotifier | None = None,
    guard: Guard | None = None,
) -> RemediationOperator:
    """Create the operator's controllers and watches on ``manager``. ``repairers`` maps each
    RepairAction to the repairer that does it (an action without one fails its rung, saying
    so); ``notifier`` is told of escalations whose policy names an escalation webhook; ``guard``
    is asked before a node is taken out of service and before each risky rung."""
    options = options or RemediationOptions()
    op = RemediationOperator(manager, cluster_cache, repairers, recorder, options, notifier, guard)
    workers = ControllerOptions(max_concurrent_reconciles=options.max_concurrent_reconciles)

    # The hand-offs on the way from a fault to its cordon (the hub records it Active → the
    # starter creates its Remediation → admission admits it → the workflow cordons) are
    # writes of this process, echoes to the next controller: each is queued as the change it
    # is for that controller, ahead of the routine work (requeues of remediations under way).
    remediation = Controller("remediation", op.reconciler, workers)
    remediation.watch(op.remediations, predicate=_phase_or_request_changed, handoff=_admitted)
    remediation.watch(op.faults, predicate=_fault_changed)  # same namespace and name
    remediation.watch(
        op.cluster_cache.watch(
            NODES, _remediations_of_node(op), predicate=_node_changed, transform=node_summary
        )
    )

    start = Controller("remediation-start", op.starter, workers)
    start.watch(op.faults, handoff=_turned_active)
    start.watch(op.remediations)  # a finished one may let a returning fault start afresh
    start.watch(op.policies, lambda p: _requests(op.faults.store.list(_namespace(p))))

    admission = Controller("remediation-admission", op.admission, workers)
    admission.watch(op.policies)
    admission.watch(op.remediations, _policy_of, handoff=_turned_pending)

    for controller in (remediation, start, admission):
        manager.add(controller)
    return op


def _remediations_of_node(op: RemediationOperator) -> ClusterMapper:
    def mapper(cluster_key: str, node: Object) -> list[Request]:
        key = f"{cluster_key}/{node['metadata']['name']}"
        return _requests(op.remediations.store.by_index(BY_NODE, key))

    return mapper


def _phase_or_request_changed(old: Object | None, new: Object) -> bool:
    """The workflow's own status writes need no reconcile of their own (it asks for the
    requeues it needs); a new phase (admission), a command or a deletion does."""
    if old is None:
        return True
    before, after = old["metadata"], new["metadata"]
    if any(before.get(k) != after.get(k) for k in ("annotations", "deletionTimestamp")):
        return True
    return bool((old.get("status") or {}).get("phase") != (new.get("status") or {}).get("phase"))


def _phase(obj: Object | None) -> Any:
    return ((obj or {}).get("status") or {}).get("phase")


def _admitted(old: Object | None, new: Object) -> bool:
    """Admission let the remediation start: the workflow cordons next."""
    return bool(_phase(new) == "Cordoning" and _phase(old) != "Cordoning")


def _turned_pending(old: Object | None, new: Object) -> bool:
    """The starter wrote a new remediation's status: admission may count it now."""
    return bool(_phase(new) == "Pending" and _phase(old) != "Pending")


def _fault_state(fault: Object | None) -> tuple[Any, Any]:
    status = (fault or {}).get("status") or {}
    return status.get("state"), status.get("history")


def _turned_active(old: Object | None, new: Object) -> bool:
    """The hub recorded the fault Active: it needs a remediation."""
    return bool(_fault_state(new)[0] == "Active" and _fault_state(old)[0] != "Active")


def _fault_changed(old: Object | None, new: Object) -> bool:
    """What the workflow reads of its fault: whether (and since when) it is Active or
    Cleared. The Remediated condition the operator writes on it itself concerns it not."""
    return old is None or _fault_state(old) != _fault_state(new)


def _node_changed(old: Object | None, new: Object) -> bool:
    return old is None or old["spec"] != new["spec"] or old["status"] != new["status"]


def _policy_of(remediation: Object) -> list[Request]:
    meta = remediation["metadata"]
    return [Request(meta["namespace"], remediation["spec"]["policyRef"]["name"])]


def _namespace(obj: Object) -> str:
    return str(obj["metadata"]["namespace"])


def _requests(objs: Any) -> list[Request]:
    return [Request(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs]
