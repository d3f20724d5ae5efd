"""The steps of reconciling a Cluster. Each records facts in the scope; ``status.py`` turns
them into conditions. A phase returns False to end this reconcile (waiting, or blocked).

Only what carries the Cluster's controller ownerReference is used, changed or deleted: a Secret
of the same name that somebody else made is a conflict reported in the conditions, never
adopted and never deleted.

The control plane changes one component at a time, in version-skew order. Every change is
first recorded in ``status.step`` and written to the API server, and only then made — so an
operator killed at any line resumes the same step (applying is idempotent) instead of
skipping it or starting another.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from kokpit.api.conditions import now
from kokpit.api.v1alpha1.cluster import KUBECONFIG_SECRET_TYPE, object_name
from kokpit.controllers.cluster import access
from kokpit.controllers.cluster.health import Repairs, broken
from kokpit.controllers.cluster.options import ClusterOptions
from kokpit.controllers.cluster.scope import ClusterScope, Object
from kokpit.controllers.cluster.skew import skew_error
from kokpit.pki import ADMIN, MACHINE_OPERATOR, Identity
from kokpit.pki.kubeconfig import render_data
from kokpit.providers.controlplane import (
    ORDER,
    ComponentName,
    ComponentPlan,
    ControlPlane,
    ControlPlaneRuntime,
    PlanError,
    Probe,
)
from kokpit.providers.controlplane.kubernetes import apiserver_dns_names, etcd_dns_names
from kokpit.providers.controlplane.process import business_pki
from kokpit.providers.guard import GUARD_DENIED, Guard, Outcome, RiskRequest, held
from kokpit.runtime import (
    ApiError,
    Client,
    NotFound,
    Recently,
    controlled_by,
    owner_reference,
)
from kokpit.runtime.client import NO_RETRY
from kokpit.runtime.config import Resolve
from kokpit.runtime.resources import SECRETS
from kokpit.runtime.store import Store

#: On the PKI Secret: how many times its certificates were renewed (each renewal is rolled
#: out to the components one at a time, like a version).
CREDENTIALS = "kokpit.io/credentials-generation"
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


class ClusterPhases:
    def __init__(
        self,
        client: Client,
        packages: Store,
        runtimes: Mapping[str, ControlPlaneRuntime],
        options: ClusterOptions,
        resolve: Resolve | None = None,
        guard: Guard | None = None,
    ) -> None:
        self._client = client
        #: Asked before each step of an upgrade (not of a creation, nor of a rollback: a
        #: rollback repairs what a failed step broke and must not wait for a budget).
        self._guard = guard
        self._packages = packages
        self._runtimes = runtimes
        self._options = options
        self._resolve = resolve
        #: PKI Secrets (by resourceVersion) found complete with no leaf due, until one is: the
        #: check writes and parses every certificate, too much for every reconcile.
        self._pki_complete: Recently[str | None] = Recently(0)
        #: Business clusters whose access this process granted lately: to which endpoint, with
        #: which renewal of the certificates.
        self._access_granted: Recently[tuple[str, int]] = Recently(3600)
        self._repairs = Repairs(options)

    async def check_runtime(self, scope: ClusterScope) -> bool:
        """First: a Cluster whose runtime this operator was not started with gets nothing made
        for it (no PKI Secret, no workload), only a condition naming the flag."""
        return self._runtime(scope) is not None

    async def resolve_package_version(self, scope: ClusterScope) -> bool:
        target = target_package_version(scope)
        package = self._packages.get(target)
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
                message = f"{why} (set spec.allowVersionSkip to force)"
                scope.blocked = ("VersionSkewNotAllowed", message)
                return False
        return True

    async def reconcile_pki(self, scope: ClusterScope) -> bool:
        """Certificates and keys live in a Secret owned by the Cluster: generated once, and
        completed when a newer kokpit needs material the Secret lacks (nothing is replaced)."""
        name = object_name(scope.name, "pki")
        secret = await self._owned_secret(scope, name)
        if secret is _NOT_OURS:
            return False
        stored = {k: _b64decode(v) for k, v in ((secret or {}).get("data") or {}).items()}
        generation = int(
            ((secret or {}).get("metadata", {}).get("annotations") or {}).get(CREDENTIALS, 0)
        )
        version = (secret or {}).get("metadata", {}).get("resourceVersion")
        if secret is not None and self._pki_complete.holds(scope.uid, version):
            material = stored  # checked at this version, and no leaf is due yet
        else:
            material, renewal_in = self._complete_pki(scope, stored)
            if material == stored:
                self._pki_complete.remember(scope.uid, version, ttl=renewal_in)
        scope.requeue(self._pki_complete.left(scope.uid) + 1)  # when the next leaf is due
        added = sorted(material.keys() - stored.keys())
        renewed = sorted(k for k in stored.keys() & material.keys() if stored[k] != material[k])
        if secret is None:
            await self._client.create(
                SECRETS, _secret(scope.cluster, name, material, "kokpit.io/pki")
            )
            message = f"CA, serving and client certificates stored in Secret {name}"
            scope.event("Normal", "CertificatesCreated", message)
        elif added or renewed:
            # Conditional: two operators renewing at once must not mix their certificates.
            meta: Object = {"resourceVersion": secret["metadata"]["resourceVersion"]}
            if renewed:
                generation += 1
                meta["annotations"] = {CREDENTIALS: str(generation)}
            data = {k: base64.b64encode(material[k]).decode() for k in (*added, *renewed)}
            await self._client.patch(
                SECRETS, name, {"metadata": meta, "data": data}, namespace=scope.namespace
            )
            what = ", ".join((*added, *renewed))
            reason = "CertificatesRenewed" if renewed else "CertificatesAdded"
            scope.event("Normal", reason, f"{what} in {name}; components restart one at a time")
        scope.credentials = generation
        scope.control_plane = control_plane(scope, material)
        return True

    def _complete_pki(
        self, scope: ClusterScope, stored: dict[str, bytes]
    ) -> tuple[dict[str, bytes], float]:
        """``stored`` plus whatever a business cluster's PKI lacks, and its leaves renewed
        when a third of their life is left, issued by its CA (everything when ``stored`` is
        empty); and the seconds until the next leaf is due."""
        with tempfile.TemporaryDirectory(prefix="kokpit-pki-") as tmp:
            pki = business_pki(
                Path(tmp),
                scope.spec["network"]["serviceCIDR"],
                cluster=scope.key,
                cluster_uid=scope.uid,
                leaf_validity=dt.timedelta(seconds=self._options.leaf_validity_seconds),
                dns_names=apiserver_dns_names(scope.namespace, scope.name),
                etcd_dns=etcd_dns_names(scope.namespace, scope.name),
            )
            pki.write(stored)
            pki.ensure()
            return pki.material(), pki.renewal_in()

    async def reconcile_control_plane(self, scope: ClusterScope) -> bool:
        """Move the control plane one component at a time, each change recorded first."""
        runtime = self._runtime(scope)
        if runtime is None or scope.package is None or scope.control_plane is None:
            return False
        cp = scope.control_plane
        target = scope.package["metadata"]["name"]
        # At once: one component's slow check (an API server's readyz while etcd is down)
        # must not delay the others', nor the news that one broke.
        healths = await asyncio.gather(*(runtime.health(cp, name) for name in ORDER))
        scope.health.update(zip(ORDER, healths, strict=True))
        for name in ORDER:
            plan = plan_for(scope.package, name, scope.credentials)
            health = scope.health[name]
            if health.ready and health.plan == plan.digest:
                continue
            if broken(scope.status, plan, health):  # it ran this plan: repair, not a step
                await self._repairs.repair(scope, runtime, plan, health)
                return False
            try:
                return await self._step(scope, runtime, plan, target, health.plan, health.detail)
            except PlanError as e:
                self._block(scope, e.reason, str(e))
                return False
        await self._release_step(scope, "Succeeded")
        self._all_healthy(scope, target)
        return True

    async def _step(
        self,
        scope: ClusterScope,
        runtime: ControlPlaneRuntime,
        plan: ComponentPlan,
        target: str,
        applied: str | None,
        detail: str,
    ) -> bool:
        """Start the step that moves ``plan.name``, or watch the one in progress."""
        status, cp = scope.status, scope.control_plane
        if cp is None or scope.package is None:
            return False
        step = status.get("step") or {}
        if (step.get("component"), step.get("version"), step.get("packageVersion")) != (
            plan.name,
            plan.version,
            target,
        ):
            # The step before is over: its component is healthy, or the target moved on.
            moved_on = step.get("component") == plan.name
            await self._release_step(scope, "Cancelled" if moved_on else "Succeeded")
            if not await self._allowed(scope, plan, target):
                return False
            status["step"] = {
                "component": plan.name,
                "version": plan.version,
                "packageVersion": target,
                "startedAt": now(),
            }
            if status.get("phase") != "RollingBack":
                status["phase"] = (
                    "Provisioning" if not status.get("packageVersion") else "Upgrading"
                )
            await scope.persist()  # the intent is in the API server before the change is made
            await runtime.apply(cp, plan)
            scope.event("Normal", "StepStarted", f"{plan.name} → {plan.version} ({target})")
            scope.requeue(self._options.poll_interval)
            return False
        if applied != plan.digest:  # recorded but maybe never made: make it (again)
            await runtime.apply(cp, plan)
        elapsed = (datetime.now(UTC) - _parse(step["startedAt"])).total_seconds()
        if elapsed > deadline(scope.package, plan.name):
            await self._release_step(scope, "Failed")
            self._step_failed(scope, plan.name, plan.version, detail)
            return False
        scope.requeue(self._options.poll_interval)
        return False

    async def reconcile_admin_kubeconfig(self, scope: ClusterScope) -> bool:
        runtime = self._runtime(scope)
        if runtime is None or scope.control_plane is None:
            return False
        endpoint = await runtime.endpoint(scope.control_plane)
        if endpoint is None:
            return True
        name = object_name(scope.name, "admin-kubeconfig")
        if await self._owned_secret(scope, name) is _NOT_OURS:
            return False
        await self._apply_kubeconfig(scope, name, endpoint, ADMIN)
        scope.status["endpoint"] = endpoint
        scope.status["adminKubeconfigSecretRef"] = {"name": name}
        return True

    async def reconcile_operator_access(self, scope: ClusterScope) -> bool:
        """The Machine-Operator's identity in the business cluster (:mod:`.access`): its RBAC
        there, applied with the admin certificate, and its kubeconfig Secret here."""
        endpoint = scope.status.get("endpoint")
        cp = scope.control_plane
        if not endpoint or cp is None or scope.status.get("phase") != "Running":
            return True
        if self._access_granted.holds(scope.uid, (endpoint, scope.credentials)):
            return True
        name = object_name(scope.name, "kokpit-kubeconfig")
        if await self._owned_secret(scope, name) is _NOT_OURS:
            return False
        pki = cp.pki
        admin = access.admin_config(endpoint, pki, self._resolve)
        try:
            # One attempt each, bounded: an API server that does not answer (yet) must not
            # hold a worker; the next reconcile tries again.
            async with Client(admin, retry=NO_RETRY) as business:
                await business.probe(seconds=5)
                for obj in access.rbac():
                    resource = access.RESOURCES[obj["kind"]]
                    await business.apply(resource, obj, field_manager=self._options.field_manager)
        except (ApiError, aiohttp.ClientError, TimeoutError) as e:
            message = f"cannot grant kokpit's access in the business cluster: {e}"
            scope.event("Warning", "AccessNotGranted", message)
            scope.requeue(self._options.failed_retry_interval)
            return False
        await self._apply_kubeconfig(scope, name, endpoint, MACHINE_OPERATOR)
        self._access_granted.remember(scope.uid, (endpoint, scope.credentials))
        return True

    async def delete(self, scope: ClusterScope) -> bool:
        """Stop the control plane and delete what the Cluster owns (and nothing else). A
        Cluster whose runtime is off can go only if nothing was ever applied for it."""
        if (
            applied_anything(scope.status)
            or scope.spec.get("runtime", "kubernetes") in self._runtimes
        ):
            runtime = self._runtime(scope)
            if runtime is None:
                return False
            await runtime.delete(control_plane(scope, {}))
        for suffix in ("pki", "admin-kubeconfig", "kokpit-kubeconfig", "bootstrap-token"):
            name = object_name(scope.name, suffix)
            try:
                secret = await self._client.get(SECRETS, name, namespace=scope.namespace)
            except NotFound:
                continue
            if controlled_by(secret, scope.uid):
                uid = secret["metadata"]["uid"]  # the one we checked, not a newer namesake
                with contextlib.suppress(NotFound):
                    await self._client.delete(SECRETS, name, namespace=scope.namespace, uid=uid)
        return True

    # -- helpers -----------------------------------------------------------------------------

    def _runtime(self, scope: ClusterScope) -> ControlPlaneRuntime | None:
        kind = scope.spec.get("runtime", "kubernetes")
        runtime = self._runtimes.get(kind)
        if runtime is None:
            enabled = ", ".join(sorted(self._runtimes)) or "none"
            message = (
                f"the {kind} runtime is not enabled in this operator (enabled: {enabled}); "
                f"start it with --runtimes including {kind}"
            )
            self._block(scope, "RuntimeNotEnabled", message)
        return runtime

    async def _apply_kubeconfig(
        self, scope: ClusterScope, name: str, endpoint: str, who: Identity
    ) -> None:
        """The Secret ``name``: a kubeconfig of ``who``'s client certificate for the business
        cluster, of kokpit's kubeconfig type, controlled by the Cluster."""
        if scope.control_plane is None:
            return
        pki = scope.control_plane.pki
        text = render_data(
            server=endpoint,
            ca=pki["ca.crt"],
            cert=pki[f"{who.file}.crt"],
            key=pki[f"{who.file}.key"],
            user=who.user,
            cluster_name=scope.name,
        )
        secret = _secret(scope.cluster, name, {"value": text.encode()}, KUBECONFIG_SECRET_TYPE)
        await self._client.apply(SECRETS, secret, field_manager=self._options.field_manager)

    async def _allowed(self, scope: ClusterScope, plan: ComponentPlan, target: str) -> bool:
        """Whether the guard lets an upgrade step start (creations and rollbacks need not ask);
        if not, a condition and an Event say why, and the step is asked for again later."""
        status = scope.status
        if self._guard is None or not _upgrading(status):
            return True
        step = {"component": plan.name, "version": plan.version, "packageVersion": target}
        verdict = await self._guard.acquire(self._request(scope, step))
        if verdict.allowed:
            return True
        o = self._options
        message, wait = held(
            verdict,
            f"{plan.name} → {plan.version}",
            at_least=o.poll_interval,
            at_most=o.failed_retry_interval,
        )
        scope.blocked = (GUARD_DENIED, message)
        scope.event("Warning", GUARD_DENIED, message)
        scope.requeue(wait)
        return False

    async def _release_step(self, scope: ClusterScope, outcome: Outcome) -> None:
        """Tell the guard how the recorded upgrade step ended (before the status says so, so
        that a crash in between tells it again: a release is answered once)."""
        step = scope.status.get("step")
        if self._guard is not None and step and _upgrading(scope.status):
            await self._guard.release(self._request(scope, step), outcome)

    def _request(self, scope: ClusterScope, step: Object) -> RiskRequest:
        meta = scope.obj["metadata"]
        key = f"{scope.namespace}/{meta['name']}"
        return RiskRequest(
            "ControlPlaneUpgradeStep",
            f"{meta['uid']}/{step['packageVersion']}/{step['component']}/{step['version']}",
            f"Cluster {key}: {step['component']} → {step['version']}",
            cluster=key,
        )

    def _block(self, scope: ClusterScope, reason: str, message: str) -> None:
        """Something a person must change: a condition, an Event, and a slow retry."""
        scope.blocked = (reason, message)
        scope.event("Warning", reason, message)
        scope.requeue(self._options.failed_retry_interval)

    async def _owned_secret(self, scope: ClusterScope, name: str) -> Object | None:
        """The Secret ``name`` if the Cluster owns it, None if there is none, and
        ``_NOT_OURS`` (with ``blocked`` set) if somebody else's has that name."""
        try:
            secret = await self._client.get(SECRETS, name, namespace=scope.namespace)
        except NotFound:
            return None
        if controlled_by(secret, scope.uid):
            return secret
        message = (
            f"Secret {name} exists and is not owned by this Cluster; kokpit will not use, "
            f"change or delete it. Delete or rename it, or give the Cluster another name"
        )
        self._block(scope, "SecretNotOwned", message)
        return _NOT_OURS

    def _step_failed(self, scope: ClusterScope, name: str, version: str, detail: str) -> None:
        status = scope.status
        target = status["step"]["packageVersion"]
        history = status.get("history") or []
        message = f"{name} {version} did not become healthy in time ({detail or 'no detail'})"
        status["step"] = None
        if (
            status.get("phase") != "RollingBack"
            and history
            and history[-1]["packageVersion"] != target
        ):
            status["phase"] = "RollingBack"
            status["failedPackageVersion"] = target
            last_good = history[-1]["packageVersion"]
            scope.event("Warning", "RollingBack", f"{message}; rolling back to {last_good}")
            scope.requeue(0.1)
        else:
            status["phase"] = "Failed"
            scope.blocked = ("HealthCheckFailed", message)
            scope.event("Warning", "HealthCheckFailed", message)
            scope.requeue(self._options.failed_retry_interval)

    def _all_healthy(self, scope: ClusterScope, target: str) -> None:
        status = scope.status
        if scope.package is None:
            return
        status["step"] = None
        if status.get("phase") == "RollingBack":
            failed = status.get("failedPackageVersion")
            scope.event("Normal", "RolledBack", f"returned to {target} after {failed} failed")
        elif status.get("packageVersion") != target:
            status["failedPackageVersion"] = None  # a new version succeeded: rollback is history
            scope.event("Normal", "PackageVersionApplied", target)
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


#: What :meth:`ClusterPhases._owned_secret` returns for a Secret that is somebody else's.
_NOT_OURS: Object = {}


def _upgrading(status: Object) -> bool:
    """A running control plane moving to another version (not created, not rolled back)."""
    return bool(status.get("packageVersion")) and status.get("phase") != "RollingBack"


def applied_anything(status: Object) -> bool:
    """Whether a runtime may have made something for this Cluster: every step is recorded in
    the status before it is made, so a status without any step, version or history says no
    (a Cluster whose runtime is not enabled can then be deleted without it)."""
    return any(status.get(k) for k in ("step", "packageVersion", "failedPackageVersion", "history"))


def not_permitted(namespace: str) -> str:
    """Why the operator cannot write a Cluster's Secrets or workloads: the admin did not bind
    its namespaced role there (config/rbac/cluster-operator.yaml)."""
    return (
        f"the Cluster-Operator may not manage Secrets and workloads in namespace {namespace}: "
        f"bind the ClusterRole kokpit-cluster-operator-namespaced there with a RoleBinding"
    )


def control_plane(scope: ClusterScope, pki: dict[str, bytes]) -> ControlPlane:
    meta, spec = scope.cluster["metadata"], scope.spec
    return ControlPlane(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        pki=pki,
        service_cidr=spec["network"]["serviceCIDR"],
        pod_cidr=spec["network"]["podCIDR"],
        replicas=spec["controlPlane"]["replicas"],
        etcd_replicas=spec["controlPlane"]["etcdReplicas"],
    )


def plan_for(package: Object, name: ComponentName, credentials: int = 0) -> ComponentPlan:
    """What ``name`` runs under ``package``, with the ``credentials``-th renewal of the
    cluster's certificates."""
    spec = package["spec"]["components"][SPEC_KEYS[name]]
    check = _health_check(package, name)
    probe = (
        Probe(check["path"], check.get("timeoutSeconds", 5), check.get("failureThreshold", 3))
        if check
        else None
    )
    return ComponentPlan(
        name,
        spec["version"],
        dict(spec.get("flags") or {}),
        spec.get("image", ""),
        probe,
        str(credentials) if credentials else "",
    )


def deadline(package: Object, name: ComponentName) -> float:
    check = _health_check(package, name)
    return float(check.get("deadlineSeconds", DEFAULT_DEADLINE_S)) if check else DEFAULT_DEADLINE_S


def _health_check(package: Object, name: ComponentName) -> dict[str, Any] | None:
    for check in package["spec"].get("healthChecks") or []:
        if check["component"] == name:
            return dict(check)
    return None


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
            "ownerReferences": [owner_reference(owner)],
        },
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def _b64decode(value: Any) -> bytes:
    return base64.b64decode(str(value))


def _parse(timestamp: str) -> datetime:
    return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
