"""The steps of reconciling a Cluster. Each records facts in the scope; ``status.py`` turns
them into conditions. A phase returns False to end this reconcile (waiting, or blocked).

The control plane changes one component at a time, in version-skew order. Every change is
first recorded in ``status.step`` and written to the API server, and only then made — so an
operator killed at any line resumes the same step (applying is idempotent) instead of
skipping it or starting another.
"""

from __future__ import annotations

import base64
import contextlib
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kokpit.api.conditions import now
from kokpit.controllers.cluster.scope import ClusterScope, Object
from kokpit.controllers.cluster.skew import skew_error
from kokpit.local.kubeconfig import render_data
from kokpit.providers.controlplane import (
    ORDER,
    ComponentName,
    ComponentPlan,
    ControlPlane,
    Probe,
)
from kokpit.providers.controlplane.process import business_pki
from kokpit.runtime import NotFound
from kokpit.runtime.resources import SECRETS

if TYPE_CHECKING:
    from kokpit.controllers.cluster.controller import ClusterReconciler

#: The JSON names of the components in a ClusterPackageVersion.
SPEC_KEYS: dict[ComponentName, str] = {
    "etcd": "etcd",
    "kube-apiserver": "kubeAPIServer",
    "kube-controller-manager": "kubeControllerManager",
    "kube-scheduler": "kubeScheduler",
}
DEFAULT_DEADLINE_S = 300.0
HISTORY_LIMIT = 32


def target_package_version(scope: ClusterScope) -> str:
    """What to apply: the spec's package version, except while rolling back (the last good
    one) or when the spec names one that already failed (stay where we are)."""
    status, spec = scope.status, scope.spec
    history = status.get("history") or []
    if status.get("phase") == "RollingBack" and history:
        return str(history[-1]["packageVersion"])
    if spec["packageVersion"] == status.get("failedPackageVersion") and status.get(
        "packageVersion"
    ):
        return str(status["packageVersion"])
    return str(spec["packageVersion"])


async def reconcile_package_version(r: ClusterReconciler, scope: ClusterScope) -> bool:
    target = target_package_version(scope)
    package = r.packages.store.get(target)
    if package is None:
        scope.blocked = ("NotFound", f"ClusterPackageVersion {target!r} does not exist")
        return False
    scope.package = package
    current = scope.status.get("kubernetesVersion")
    wanted = package["spec"]["kubernetesVersion"]
    rolling_back = scope.status.get("phase") == "RollingBack"
    if not rolling_back and not scope.spec.get("allowVersionSkip"):
        why = skew_error(current, wanted)
        if why is not None:
            scope.blocked = ("VersionSkewNotAllowed", f"{why} (set spec.allowVersionSkip to force)")
            return False
    return True


async def reconcile_pki(r: ClusterReconciler, scope: ClusterScope) -> bool:
    """Certificates and keys live in a Secret owned by the Cluster; generated once."""
    meta = scope.cluster["metadata"]
    name = f"{meta['name']}-pki"
    cidr = scope.spec["network"]["serviceCIDR"]
    try:
        secret = await r.client.get(SECRETS, name, namespace=meta["namespace"])
        material = {k: _b64decode(v) for k, v in (secret.get("data") or {}).items()}
    except NotFound:
        with tempfile.TemporaryDirectory(prefix="kokpit-pki-") as tmp:
            pki = business_pki(Path(tmp), cidr)
            pki.ensure()
            material = pki.material()
        await r.client.create(SECRETS, _secret(scope.cluster, name, material, "kokpit.io/pki"))
        await r.recorder.event(
            scope.cluster,
            "Normal",
            "CertificatesCreated",
            f"CA, serving and client certificates stored in Secret {name}",
        )
    scope.control_plane = control_plane(scope, material)
    return True


async def reconcile_control_plane(r: ClusterReconciler, scope: ClusterScope) -> bool:
    assert scope.package is not None
    assert scope.control_plane is not None
    cp, status = scope.control_plane, scope.status
    target = scope.package["metadata"]["name"]
    for name in ORDER:
        scope.health[name] = await r.runtime_for(scope).health(cp, name)
    for name in ORDER:
        plan = plan_for(scope.package, name)
        health = scope.health[name]
        if health.ready and health.plan == plan.digest:
            continue
        step = status.get("step") or {}
        if (step.get("component"), step.get("version"), step.get("packageVersion")) != (
            name,
            plan.version,
            target,
        ):
            status["step"] = {
                "component": name,
                "version": plan.version,
                "packageVersion": target,
                "startedAt": now(),
            }
            if status.get("phase") not in ("RollingBack",):
                status["phase"] = (
                    "Provisioning" if not status.get("packageVersion") else "Upgrading"
                )
            await r.write(scope)  # the intent is in the API server before the change is made
            await r.runtime_for(scope).apply(cp, plan)
            await r.recorder.event(
                scope.cluster, "Normal", "StepStarted", f"{name} → {plan.version} ({target})"
            )
            scope.requeue(r.options.poll_interval)
            return False
        if health.plan != plan.digest:  # recorded but maybe never made: make it (again)
            await r.runtime_for(scope).apply(cp, plan)
        elapsed = (datetime.now(UTC) - _parse(step["startedAt"])).total_seconds()
        if elapsed > deadline(scope.package, name):
            await _step_failed(r, scope, name, plan.version, health.detail)
            return False
        scope.requeue(r.options.poll_interval)
        return False
    await _all_healthy(r, scope, target)
    return True


async def reconcile_admin_kubeconfig(r: ClusterReconciler, scope: ClusterScope) -> bool:
    assert scope.control_plane is not None
    endpoint = await r.runtime_for(scope).endpoint(scope.control_plane)
    if endpoint is None:
        return True
    pki = scope.control_plane.pki
    name = f"{scope.cluster['metadata']['name']}-admin-kubeconfig"
    text = render_data(
        server=endpoint,
        ca=pki["ca.crt"],
        cert=pki["admin.crt"],
        key=pki["admin.key"],
        user="admin",
        cluster_name=scope.cluster["metadata"]["name"],
    )
    secret = _secret(scope.cluster, name, {"value": text.encode()}, "kokpit.io/kubeconfig")
    await r.client.apply(SECRETS, secret, field_manager=r.options.field_manager)
    scope.status["endpoint"] = endpoint
    scope.status["adminKubeconfigSecretRef"] = {"name": name}
    return True


async def reconcile_delete(r: ClusterReconciler, scope: ClusterScope) -> None:
    """Stop the control plane and delete everything the Cluster owned."""
    meta = scope.cluster["metadata"]
    if applied_anything(scope.status) or scope.spec.get("runtime", "kubernetes") in r.runtimes:
        await r.runtime_for(scope).delete(control_plane(scope, {}))
    for suffix in ("pki", "admin-kubeconfig"):
        with contextlib.suppress(NotFound):
            await r.client.delete(SECRETS, f"{meta['name']}-{suffix}", namespace=meta["namespace"])


def applied_anything(status: Object) -> bool:
    """Whether a runtime may have made something for this Cluster: every step is recorded in
    the status before it is made, so a status without any step, version or history says no
    (a Cluster whose runtime is not enabled can then be deleted without it)."""
    return any(status.get(k) for k in ("step", "packageVersion", "failedPackageVersion", "history"))


def control_plane(scope: ClusterScope, pki: dict[str, bytes]) -> ControlPlane:
    meta, spec = scope.cluster["metadata"], scope.spec
    return ControlPlane(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        pki=pki,
        service_cidr=spec["network"]["serviceCIDR"],
        replicas=spec["controlPlane"]["replicas"],
        etcd_replicas=spec["controlPlane"]["etcdReplicas"],
    )


def plan_for(package: Object, name: ComponentName) -> ComponentPlan:
    spec = package["spec"]["components"][SPEC_KEYS[name]]
    check = _health_check(package, name)
    probe = (
        Probe(check["path"], check.get("timeoutSeconds", 5), check.get("failureThreshold", 3))
        if check
        else None
    )
    return ComponentPlan(
        name, spec["version"], dict(spec.get("flags") or {}), spec.get("image", ""), probe
    )


def deadline(package: Object, name: ComponentName) -> float:
    check = _health_check(package, name)
    return float(check.get("deadlineSeconds", DEFAULT_DEADLINE_S)) if check else DEFAULT_DEADLINE_S


def _health_check(package: Object, name: ComponentName) -> dict[str, Any] | None:
    for check in package["spec"].get("healthChecks") or []:
        if check["component"] == name:
            return dict(check)
    return None


async def _step_failed(
    r: ClusterReconciler, scope: ClusterScope, name: str, version: str, detail: str
) -> None:
    status = scope.status
    target = status["step"]["packageVersion"]
    history = status.get("history") or []
    message = f"{name} {version} did not become healthy in time ({detail or 'no detail'})"
    status["step"] = None
    if status.get("phase") != "RollingBack" and history and history[-1]["packageVersion"] != target:
        status["phase"] = "RollingBack"
        status["failedPackageVersion"] = target
        await r.recorder.event(
            scope.cluster,
            "Warning",
            "RollingBack",
            f"{message}; rolling back to {history[-1]['packageVersion']}",
        )
        scope.requeue(0.1)
    else:
        status["phase"] = "Failed"
        scope.blocked = ("HealthCheckFailed", message)
        await r.recorder.event(scope.cluster, "Warning", "HealthCheckFailed", message)
        scope.requeue(r.options.failed_retry_interval)


async def _all_healthy(r: ClusterReconciler, scope: ClusterScope, target: str) -> None:
    assert scope.package is not None
    status = scope.status
    status["step"] = None
    if status.get("phase") == "RollingBack":
        await r.recorder.event(
            scope.cluster,
            "Normal",
            "RolledBack",
            f"returned to {target} after {status.get('failedPackageVersion')} failed",
        )
    elif status.get("packageVersion") != target:
        status["failedPackageVersion"] = None  # a new version succeeded: the rollback is history
        await r.recorder.event(scope.cluster, "Normal", "PackageVersionApplied", target)
    status["phase"] = "Running"
    status["packageVersion"] = target
    status["kubernetesVersion"] = scope.package["spec"]["kubernetesVersion"]
    history = list(status.get("history") or [])
    if not history or history[-1]["packageVersion"] != target:
        history.append(
            {
                "packageVersion": target,
                "kubernetesVersion": status["kubernetesVersion"],
                "appliedAt": now(),
            }
        )
    status["history"] = history[-HISTORY_LIMIT:]


def _secret(owner: Object, name: str, data: dict[str, bytes], type_: str) -> Object:
    meta = owner["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": type_,
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {"kokpit.io/cluster": meta["name"]},
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def _b64decode(value: Any) -> bytes:
    return base64.b64decode(str(value))


def _parse(timestamp: str) -> datetime:
    return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
