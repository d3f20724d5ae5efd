"""The Machine-Operator's phases. Each takes the reconciler and the scope, acts, records what
it saw in the scope, and says whether the next phase may run.

Crash safety: before a step that changes the host, the step is written to
``status.lastOperation`` (result Running). A restarted operator does not trust that record: it
runs every package's ``check`` again and takes the next change from what the host reports.
Steps are idempotent, so a step that may have run runs again at most, and is never skipped.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import TYPE_CHECKING, Any

from kokpit.api.conditions import now
from kokpit.controllers.machine import gates, packages, status
from kokpit.controllers.machine.clusters import ClusterNotReady, not_permitted
from kokpit.controllers.machine.packages import Change
from kokpit.controllers.machine.scope import MachineScope, Object
from kokpit.providers.machine import (
    Action,
    Credentials,
    Host,
    HostError,
    HostKeyMismatch,
    StepResult,
)
from kokpit.providers.machine.kubelet import Registration
from kokpit.runtime import Client, Conflict, Forbidden, NotFound, TooManyRequests
from kokpit.runtime.resources import CONFIGMAPS, NODES, PODS, SECRETS

if TYPE_CHECKING:
    from kokpit.controllers.machine.controller import MachineReconciler


async def reconcile_package_version(r: MachineReconciler, scope: MachineScope) -> bool:
    name = scope.spec["packageVersion"]
    scope.package_version = r.package_versions.store.get(name)
    if scope.package_version is None:
        scope.packages_problem = (
            "PackageVersionNotFound",
            f"MachinePackageVersion {name} not found",
        )
        return False
    applied = scope.status.get("packageVersion")
    if applied and applied != name:
        scope.applied_version = r.package_versions.store.get(applied)
    return True


async def reconcile_packages(r: MachineReconciler, scope: MachineScope) -> bool:
    """Bring the host's packages to the desired version: check all, then change one at a
    time (retired packages removed first), verifying and checking again after each change."""
    if not r.packages_due(scope):
        return True
    desired = scope.desired_packages
    applied = scope.applied_version["spec"]["packages"] if scope.applied_version else []
    retired = packages.retired(desired, applied)
    try:
        if not await _connect(r, scope):
            return False
        installed = await _check(r, scope, [*desired, *retired])
        if installed is None:
            return False
        while (change := packages.next_change(desired, installed, retired)) is not None:
            if not await _change(r, scope, change, installed):
                return False
    except HostError as e:
        _host_failed(r, scope, e)
        return False
    scope.status["packageVersion"] = scope.spec["packageVersion"]
    _record_packages(scope, desired, installed)
    r.packages_checked(scope)
    return True


async def reconcile_node(r: MachineReconciler, scope: MachineScope) -> bool:
    """Join the node (the kubelet package is installed), then gate it: publish the reported
    conditions on the node and keep the not-ready taint until every gate passes."""
    if not scope.has_kubelet:
        return True
    try:
        client = await r.clusters.get(scope.namespace, scope.spec["clusterRef"]["name"])
    except ClusterNotReady as e:
        scope.node_problem = ("ClusterNotReady", str(e))
        scope.requeue(r.options.retry_interval)
        return False
    node: Object | None = None
    if not r.joined(scope):
        node = await _register(r, scope, client)
    configmap = r.condition_configmaps.store.get(scope.key)
    reports, problems = gates.parse(configmap)
    gate_list = scope.spec.get("readinessGates") or []
    verdict = gates.evaluate(gate_list, reports, bool(scope.status.get("bootstrapped")))
    if verdict.all_passed:
        scope.status["bootstrapped"] = True
    scope.gates_passed = verdict.passed
    scope.gates_message = "; ".join([verdict.message, *problems])
    _mirror_gates(scope, gate_list, reports)
    if r.published(scope, verdict):
        return True
    if node is None:
        try:
            node = await client.get(NODES, scope.status["nodeName"])
        except NotFound:  # deleted behind our back: register again
            r.forget(scope)
            scope.requeue(0.5)
            return False
    node = await _publish_conditions(r, client, node, verdict)
    await _set_taint(client, node, not verdict.passed)
    r.mark_published(scope, verdict)
    return True


async def reconcile_delete(r: MachineReconciler, scope: MachineScope) -> bool:
    """Drain and delete the node, then remove the packages, the last installed first.
    Returns True when everything is gone and the finalizer may go."""
    scope.status["phase"] = "Deleting"
    node = scope.status.get("nodeName")
    client: Client | None = None
    if node:
        try:
            client = await r.clusters.get(scope.namespace, scope.spec["clusterRef"]["name"])
        except ClusterNotReady as e:
            if r.clusters.exists(scope.namespace, scope.spec["clusterRef"]["name"]):
                scope.node_problem = ("ClusterNotReady", str(e))
                scope.requeue(r.options.retry_interval)
                return False
            # The cluster is gone, and its nodes with it.
        if client is not None and not await _drain(r, scope, client, node):
            scope.requeue(r.options.drain_poll_interval)
            return False
    if scope.package_version is not None:
        try:
            if not await _connect(r, scope):
                return False
            for package in reversed(scope.desired_packages):
                installed = await _check(r, scope, [package])
                if installed is None:
                    return False
                removable = packages.scripts(package).get("remove")
                change = Change(package, "remove")
                if (
                    installed[package["name"]]
                    and removable
                    and not await _change(r, scope, change, installed)
                ):
                    return False
        except HostError as e:
            _host_failed(r, scope, e)
            return False
    if client is not None and node:
        with contextlib.suppress(NotFound):
            await client.delete(NODES, node)
    scope.status["nodeName"] = None
    return True


# -- host -----------------------------------------------------------------------------------


async def _connect(r: MachineReconciler, scope: MachineScope) -> bool:
    """Who the steps run on, with which credentials (from the Machine's SSH Secret)."""
    spec = scope.spec
    credentials = None
    if spec.get("executor", "ssh") == "ssh":
        name = spec["sshSecretRef"]["name"]
        try:
            secret = await r.client.get(SECRETS, name, namespace=scope.namespace)
        except NotFound:
            scope.host_problem = ("SecretNotFound", f"SSH Secret {name} not found")
            scope.requeue(r.options.retry_interval)
            return False
        except Forbidden:
            scope.host_problem = ("Forbidden", not_permitted(scope.namespace))
            scope.requeue(r.options.max_backoff)
            return False
        data = secret.get("data") or {}
        missing = [k for k in ("username", "privateKey", "knownHosts") if not data.get(k)]
        if missing:
            scope.host_problem = ("InvalidSecret", f"SSH Secret {name} lacks {', '.join(missing)}")
            scope.requeue(r.options.retry_interval)
            return False
        credentials = Credentials(
            base64.b64decode(data["username"]).decode(),
            base64.b64decode(data["privateKey"]),
            base64.b64decode(data["knownHosts"]),
        )
    scope.host = Host(scope.key, spec["address"], spec.get("port", 22), credentials)
    return True


async def _run(
    r: MachineReconciler, scope: MachineScope, package: Object, action: Action
) -> StepResult:
    step = packages.step(package, action, node_name=scope.name)
    assert step is not None, f"{package['name']} has no {action} step"
    assert scope.host is not None
    return await r.executor_for(scope).run(scope.host, step)


async def _check(
    r: MachineReconciler, scope: MachineScope, pkgs: list[Object]
) -> dict[str, str] | None:
    """What the host has: each package's check step (None if a check itself failed)."""
    installed: dict[str, str] = {}
    for package in pkgs:
        result = await _run(r, scope, package, "check")
        if not result.ok:
            message = f"{package['name']} check failed: {result.stderr_tail or 'no stderr'}"
            _package_failed(r, scope, "CheckFailed", message)
            return None
        installed[package["name"]] = _version(result)
    scope.host_problem = None
    return installed


async def _change(
    r: MachineReconciler, scope: MachineScope, change: Change, installed: dict[str, str]
) -> bool:
    """Run one change: record the intent, run it and verify, then check again."""
    operation: Object = {
        "package": change.name,
        "step": change.action,
        "result": "Running",
        "startedAt": now(),
    }
    scope.status["lastOperation"] = operation
    scope.status["phase"] = phase_while_changing(scope)
    await r.write(scope)  # the intent is in the API server before the host is touched
    failed_step, result = change.action, await _run(r, scope, change.package, change.action)
    if result.ok and change.action != "remove" and "verify" in packages.scripts(change.package):
        failed_step, result = "verify", await _run(r, scope, change.package, "verify")
    check = await _run(r, scope, change.package, "check")
    installed[change.name] = _version(check) if check.ok else ""
    want = "" if change.action == "remove" else change.package["version"]
    if result.ok and check.ok and installed[change.name] == want:
        operation.update(result="Succeeded", finishedAt=now())
        r.reset_backoff(scope)
        return True
    if not result.ok:
        detail = f"{failed_step} exited {result.exit_status}: {result.stderr_tail or 'no stderr'}"
    else:
        found = installed[change.name] or "nothing installed"
        detail = f"after {change.action}, check reports {found!r}, not {want or 'nothing'!r}"
    operation.update(result="Failed", finishedAt=now(), message=detail[-4096:], step=failed_step)
    _package_failed(r, scope, "StepFailed", f"{change.name}: {detail}")
    return False


def _version(check: StepResult) -> str:
    lines = [line.strip() for line in check.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _package_failed(r: MachineReconciler, scope: MachineScope, reason: str, message: str) -> None:
    scope.packages_problem = (reason, message)
    scope.events.append(("Warning", reason, message))
    scope.requeue(r.backoff(scope))


def _host_failed(r: MachineReconciler, scope: MachineScope, error: HostError) -> None:
    scope.host_problem = (error.reason, str(error))
    scope.events.append(("Warning", error.reason, str(error)))
    # A wrong host key needs a person; retry rarely. An unreachable host may come back.
    scope.requeue(r.options.max_backoff if isinstance(error, HostKeyMismatch) else r.backoff(scope))


def _record_packages(scope: MachineScope, desired: list[Object], installed: dict[str, str]) -> None:
    scope.status["packages"] = [
        {"name": p["name"], "version": installed.get(p["name"], "")} for p in desired
    ]


def phase_while_changing(scope: MachineScope) -> str:
    if scope.machine["metadata"].get("deletionTimestamp"):
        return "Deleting"
    return "Updating" if scope.status.get("packageVersion") else "Provisioning"


# -- node -----------------------------------------------------------------------------------


async def _register(r: MachineReconciler, scope: MachineScope, client: Client) -> Object:
    """Register the node (as its kubelet would), tainted not-ready while gates are pending,
    and create its Condition ConfigMap for the reporters."""
    taints = list(scope.spec.get("taints") or [])
    if scope.spec.get("readinessGates"):
        taints.append(gates.NOT_READY_TAINT)
    registration = Registration(
        name=scope.name,
        machine=scope.key,
        address=scope.spec["address"],
        labels=scope.spec.get("nodeLabels") or {},
        taints=taints,
    )
    node = await r.kubelet.register(client, registration)
    meta = scope.machine["metadata"]
    await r.client.apply(
        CONFIGMAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": scope.name,
                "namespace": scope.namespace,
                "labels": {gates.LABEL: "true"},
                "ownerReferences": [
                    {
                        "apiVersion": scope.machine["apiVersion"],
                        "kind": "Machine",
                        "name": meta["name"],
                        "uid": meta["uid"],
                    }
                ],
            },
        },
        field_manager=r.options.field_manager,
    )
    scope.status["nodeName"] = scope.name
    return node


async def _publish_conditions(
    r: MachineReconciler, client: Client, node: Object, verdict: gates.Verdict
) -> Object:
    """Server-side apply of the reported conditions on the node's status, as their own field
    manager: the kubelet's (KWOK's) conditions are left alone, and a condition no longer
    reported is removed with our ownership of it."""
    current = {c["type"]: c for c in (node.get("status") or {}).get("conditions") or []}
    if all(_published(current.get(r.type), r) for r in verdict.conditions) and not (
        _ours(node, r.options.gates_field_manager) - {r.type for r in verdict.conditions}
    ):
        return node  # nothing to change: no write
    stamp = now()
    conditions = []
    for report in verdict.conditions:
        old = current.get(report.type)
        unchanged = old is not None and old.get("status") == report.status
        conditions.append(
            {
                "type": report.type,
                "status": report.status,
                "reason": report.reason,
                "message": report.message,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": old["lastTransitionTime"] if unchanged else stamp,  # type: ignore[index]
            }
        )
    return await client.apply(
        NODES,
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node["metadata"]["name"]},
            "status": {"conditions": conditions},
        },
        subresource="status",
        field_manager=r.options.gates_field_manager,
    )


def _published(condition: Object | None, report: gates.Report) -> bool:
    return condition is not None and all(
        condition.get(k) == v
        for k, v in (
            ("status", report.status),
            ("reason", report.reason),
            ("message", report.message),
        )
    )


def _ours(node: Object, manager: str) -> set[str]:
    """The condition types ``manager`` owns on the node, from its managedFields."""
    types: set[str] = set()
    for entry in node["metadata"].get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("subresource") != "status":
            continue
        fields = (entry.get("fieldsV1") or {}).get("f:status", {}).get("f:conditions", {})
        for key in fields:
            if key.startswith("k:"):
                types.add(json.loads(key[2:])["type"])
    return types


async def _set_taint(client: Client, node: Object, tainted: bool) -> None:
    """Add or remove the not-ready taint; conditional on the node's resourceVersion, because
    taints are one list that the node lifecycle controller writes too."""
    name = node["metadata"]["name"]
    for attempt in range(3):
        taints = (node.get("spec") or {}).get("taints") or []
        if any(_is_gate_taint(t) for t in taints) == tainted:
            return
        new = [t for t in taints if not _is_gate_taint(t)]
        if tainted:
            new.append(gates.NOT_READY_TAINT)
        rv = node["metadata"]["resourceVersion"]
        try:
            await client.patch(
                NODES, name, {"metadata": {"resourceVersion": rv}, "spec": {"taints": new}}
            )
            return
        except Conflict:  # the kubelet (KWOK) wrote the node in between: read it again
            if attempt == 2:
                raise
            node = await client.get(NODES, name)


def _is_gate_taint(taint: dict[str, Any]) -> bool:
    return bool(taint.get("key") == gates.NOT_READY_TAINT["key"])


def _mirror_gates(
    scope: MachineScope, gate_list: list[Object], reports: dict[str, gates.Report]
) -> None:
    """Copy each gate's condition from the reports onto the Machine (Unknown when missing);
    conditions of gates no longer in the spec are dropped."""
    types = {g["conditionType"] for g in gate_list}
    kept = [
        c
        for c in scope.status.get("conditions") or []
        if c["type"] in types or c["type"] in status.OWN_CONDITIONS
    ]
    scope.status["conditions"] = kept
    scope.mirrored = {
        t: reports.get(t) or gates.Report(t, "Unknown", "NotReported", "no report yet")
        for t in sorted(types)
    }


async def _drain(r: MachineReconciler, scope: MachineScope, client: Client, node: str) -> bool:
    """Cordon the node and evict its pods through the Eviction API (PodDisruptionBudgets
    hold it back); True once no pod that needs moving is left."""
    try:
        obj = await client.get(NODES, node)
    except NotFound:
        return True
    if not (obj.get("spec") or {}).get("unschedulable"):
        await client.patch(NODES, node, {"spec": {"unschedulable": True}})
    pods = (await client.list(PODS, field_selector=f"spec.nodeName={node}")).items
    remaining, blocked = 0, []
    for pod in pods:
        meta = pod["metadata"]
        if _stays(pod):
            continue
        remaining += 1
        if meta.get("deletionTimestamp"):
            continue
        try:
            await client.evict(meta["namespace"], meta["name"])
        except TooManyRequests as e:
            blocked.append(f"{meta['namespace']}/{meta['name']}: {e}")
        except (NotFound, Conflict):
            pass
    if blocked:
        message = "eviction refused (PodDisruptionBudget): " + "; ".join(blocked[:5])
        scope.node_problem = ("DrainBlocked", message)
        scope.events.append(("Warning", "DrainBlocked", message))
    elif remaining:
        scope.node_problem = ("Draining", f"waiting for {remaining} pods to leave {node}")
    return remaining == 0


def _stays(pod: Object) -> bool:
    """Pods a drain leaves: DaemonSet pods, static (mirror) pods, and finished pods."""
    meta = pod["metadata"]
    if any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or []):
        return True
    if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
        return True
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
