"""The ``kubernetes`` runtime: a business control plane as workloads of the meta-cluster.

The production kube-on-kube form. etcd is a StatefulSet behind a headless Service; the other
components are Deployments; kube-apiserver has a Service that is the cluster's endpoint. Each
mounts only its own files of the Cluster's PKI Secret and of the kubeconfigs Secret (``items``;
which ones: :data:`~kokpit.pki.MATERIAL`), runs as a fixed non-root user with a
read-only root filesystem, no capabilities and the runtime's default seccomp profile; all are
owned by the Cluster (so the garbage collector removes what an interrupted delete left), and
are written by server-side apply, so applying a plan twice changes nothing. Health is the
workloads' own status: every replica updated to the plan's version and ready.

On the local meta-cluster the pods land on kwok nodes, which run no containers: there the
runtime exercises scheduling, rollout and status at scale, not the components themselves
(the ``process`` runtime runs real ones).
"""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass
from typing import Any

from kokpit.api.v1alpha1.cluster import DerivedSuffix, object_name
from kokpit.local.components import node_ipam_flags
from kokpit.pki import MATERIAL
from kokpit.pki.kubeconfig import render_data
from kokpit.providers.controlplane import (
    ComponentHealth,
    ComponentName,
    ComponentPlan,
    ControlPlane,
    PlanError,
)
from kokpit.runtime import Client, NotFound, Resource, controlled_by
from kokpit.runtime.resources import DEPLOYMENTS, SECRETS, SERVICES, STATEFULSETS

PKI_DIR = "/etc/kubernetes/pki"
#: The digest of the plan a workload runs (a flag change rolls the pods like a version change).
PLAN_ANNOTATION = "kokpit.io/plan"
KUBECONFIG_DIR = "/etc/kubernetes/kubeconfig"
#: The kubeconfig each component reads from the kubeconfigs Secret.
KUBECONFIGS = {
    "kube-controller-manager": "controller-manager.kubeconfig",
    "kube-scheduler": "scheduler.kubeconfig",
}
#: The user and group every component runs as: distroless's ``nonroot``, which the
#: registry.k8s.io images are built on. Secret files are group-readable by it (``fsGroup``).
RUN_AS = 65532
#: Default images by component, when the package version names none.
IMAGES = {
    "etcd": "registry.k8s.io/etcd:{bare}-0",
    "kube-apiserver": "registry.k8s.io/kube-apiserver:{version}",
    "kube-controller-manager": "registry.k8s.io/kube-controller-manager:{version}",
    "kube-scheduler": "registry.k8s.io/kube-scheduler:{version}",
}


@dataclass(frozen=True)
class KubernetesRuntimeOptions:
    field_manager: str = "kokpit-cluster-operator"
    #: etcd's volume: a PersistentVolumeClaim of this storage class, or an emptyDir when None
    #: (the local meta-cluster has no storage provisioner).
    etcd_storage_class: str | None = None
    etcd_storage: str = "8Gi"


class KubernetesRuntime:
    def __init__(self, client: Client, options: KubernetesRuntimeOptions | None = None) -> None:
        self.client = client
        self.options = options or KubernetesRuntimeOptions()

    async def apply(self, cp: ControlPlane, plan: ComponentPlan) -> None:
        if plan.name == "etcd":
            await self._apply(SERVICES, self._service(cp, "etcd", 2379, headless=True))
        if plan.name == "kube-apiserver":
            await self._apply(SERVICES, self._service(cp, "kube-apiserver", 6443))
        if plan.name in ("kube-controller-manager", "kube-scheduler"):
            await self._apply(SECRETS, self._kubeconfigs(cp))
        resource, workload = self._workload(cp, plan)
        await self._apply(resource, workload)

    async def health(self, cp: ControlPlane, name: ComponentName) -> ComponentHealth:
        resource = STATEFULSETS if name == "etcd" else DEPLOYMENTS
        try:
            obj = await self.client.get(resource, _name(cp, name), namespace=cp.namespace)
        except NotFound:
            return ComponentHealth(False, None, f"{name} does not exist")
        meta, spec, status = obj["metadata"], obj["spec"], obj.get("status") or {}
        version = (meta.get("labels") or {}).get("kokpit.io/version")
        digest = (meta.get("annotations") or {}).get(PLAN_ANNOTATION)
        want = spec.get("replicas", 1)
        settled = status.get("observedGeneration", 0) >= meta.get("generation", 0)
        updated = status.get("updatedReplicas", 0) >= want
        ready = status.get("readyReplicas", 0) >= want
        if settled and updated and ready:
            return ComponentHealth(True, version, plan=digest)
        detail = f"{status.get('readyReplicas', 0)}/{want} replicas ready"
        return ComponentHealth(False, version, detail, digest)

    async def endpoint(self, cp: ControlPlane) -> str | None:
        return f"https://{_name(cp, 'kube-apiserver')}.{cp.namespace}.svc:6443"

    async def delete(self, cp: ControlPlane) -> None:
        owned: tuple[tuple[Resource, DerivedSuffix], ...] = (
            (DEPLOYMENTS, "kube-scheduler"),
            (DEPLOYMENTS, "kube-controller-manager"),
            (DEPLOYMENTS, "kube-apiserver"),
            (SERVICES, "kube-apiserver"),
            (STATEFULSETS, "etcd"),
            (SERVICES, "etcd"),
            (SECRETS, "kubeconfigs"),
        )
        for resource, name in owned:
            try:
                found = await self.client.get(resource, _name(cp, name), namespace=cp.namespace)
            except NotFound:
                continue
            if not controlled_by(found, cp.uid):
                continue  # somebody else's, whatever its name: never deleted
            with contextlib.suppress(NotFound):
                await self.client.delete(
                    resource,
                    _name(cp, name),
                    namespace=cp.namespace,
                    uid=found["metadata"]["uid"],
                    propagation_policy="Background",
                )

    async def _apply(self, resource: Resource, obj: dict[str, Any]) -> None:
        """Apply ``obj``, unless an object of that name exists that the Cluster does not
        control: that one is somebody else's, and is neither adopted nor overwritten."""
        meta = obj["metadata"]
        try:
            found = await self.client.get(resource, meta["name"], namespace=meta["namespace"])
        except NotFound:
            found = None
        if found is not None and not controlled_by(found, meta["ownerReferences"][0]["uid"]):
            raise PlanError(
                f"{resource.kind} {meta['name']} exists and is not owned by this Cluster; "
                f"delete or rename it"
            )
        await self.client.apply(resource, obj, field_manager=self.options.field_manager)

    def _meta(self, cp: ControlPlane, component: DerivedSuffix, **labels: str) -> dict[str, Any]:
        return {
            "name": _name(cp, component),
            "namespace": cp.namespace,
            "labels": {"kokpit.io/cluster": cp.name, "kokpit.io/component": component, **labels},
            "ownerReferences": [
                {
                    "apiVersion": "kokpit.io/v1alpha1",
                    "kind": "Cluster",
                    "name": cp.name,
                    "uid": cp.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }

    def _service(
        self, cp: ControlPlane, component: DerivedSuffix, port: int, *, headless: bool = False
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "selector": {"kokpit.io/cluster": cp.name, "kokpit.io/component": component},
            "ports": [{"name": component, "port": port, "targetPort": port}],
        }
        if headless:
            spec |= {"clusterIP": "None", "publishNotReadyAddresses": True}
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self._meta(cp, component),
            "spec": spec,
        }

    def _kubeconfigs(self, cp: ControlPlane) -> dict[str, Any]:
        server = f"https://{_name(cp, 'kube-apiserver')}.{cp.namespace}.svc:6443"
        data = {
            f"{who}.kubeconfig": render_data(
                server=server,
                ca=cp.pki["ca.crt"],
                cert=cp.pki[f"{who}.crt"],
                key=cp.pki[f"{who}.key"],
                user=who,
                cluster_name=cp.name,
            )
            for who in ("controller-manager", "scheduler")
        }
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": self._meta(cp, "kubeconfigs"),
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }

    def _workload(self, cp: ControlPlane, plan: ComponentPlan) -> tuple[Resource, dict[str, Any]]:
        labels = {"kokpit.io/cluster": cp.name, "kokpit.io/component": plan.name}
        image = plan.image or IMAGES[plan.name].format(
            version=plan.version, bare=plan.version.lstrip("v")
        )
        volumes, mounts = _volumes(cp, plan.name, self.options.etcd_storage_class is None)
        container = {
            "name": plan.name,
            "image": image,
            "command": [
                plan.name if plan.name != "etcd" else "etcd",
                *_flags(_default_flags(cp, plan.name), plan.flags),
            ],
            "volumeMounts": mounts,
            "readinessProbe": _readiness_probe(plan),
            "securityContext": CONTAINER_SECURITY,
        }
        template: dict[str, Any] = {
            "metadata": {"labels": {**labels, "kokpit.io/version": plan.version}},
            "spec": {
                "containers": [container],
                "volumes": volumes,
                "automountServiceAccountToken": False,
                "securityContext": POD_SECURITY,
            },
        }
        meta = self._meta(cp, plan.name, **{"kokpit.io/version": plan.version})
        meta["annotations"] = {PLAN_ANNOTATION: plan.digest}
        template["metadata"]["annotations"] = {PLAN_ANNOTATION: plan.digest}
        if plan.name == "etcd":
            spec: dict[str, Any] = {
                "replicas": cp.etcd_replicas,
                "serviceName": _name(cp, "etcd"),
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": labels},
                "template": template,
            }
            if self.options.etcd_storage_class is not None:
                spec["volumeClaimTemplates"] = [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "storageClassName": self.options.etcd_storage_class,
                            "resources": {"requests": {"storage": self.options.etcd_storage}},
                        },
                    }
                ]
            return STATEFULSETS, {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": meta,
                "spec": spec,
            }
        spec = {"replicas": cp.replicas, "selector": {"matchLabels": labels}, "template": template}
        return DEPLOYMENTS, {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": spec,
        }


def _name(cp: ControlPlane, suffix: DerivedSuffix) -> str:
    return object_name(cp.name, suffix)


#: The pod's security context: a fixed non-root user whose group owns the mounted Secret
#: files and etcd's data volume (``fsGroup``), and the runtime's default seccomp profile.
POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
#: The container's: nothing it may write but its volumes, and no way to gain privileges.
CONTAINER_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _volumes(
    cp: ControlPlane, component: str, etcd_empty_dir: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The volumes and mounts of ``component``: its own PKI files and kubeconfig (Secret
    ``items``, group-readable by :data:`RUN_AS` only), a writable ``/tmp``, and etcd's data."""
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"medium": "Memory"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if files := MATERIAL[component]:
        items = [{"key": f, "path": f} for f in files]
        volumes.append(
            {
                "name": "pki",
                "secret": {"secretName": f"{cp.name}-pki", "items": items, "defaultMode": 0o440},
            }
        )
        mounts.append({"name": "pki", "mountPath": PKI_DIR, "readOnly": True})
    if own := KUBECONFIGS.get(component):
        secret = {
            "secretName": _name(cp, "kubeconfigs"),
            "items": [{"key": own, "path": own}],
            "defaultMode": 0o440,
        }
        volumes.append({"name": "kubeconfig", "secret": secret})
        mounts.append({"name": "kubeconfig", "mountPath": KUBECONFIG_DIR, "readOnly": True})
    if component == "etcd":
        if etcd_empty_dir:
            volumes.append({"name": "data", "emptyDir": {}})
        mounts.append({"name": "data", "mountPath": "/var/lib/etcd"})
    return volumes, mounts


#: The port and scheme each component serves its health endpoints on.
HEALTH_PORTS: dict[str, tuple[int, str]] = {
    "etcd": (2379, "HTTP"),
    "kube-apiserver": (6443, "HTTPS"),
    "kube-controller-manager": (10257, "HTTPS"),
    "kube-scheduler": (10259, "HTTPS"),
}


def _readiness_probe(plan: ComponentPlan) -> dict[str, Any]:
    """The package version's health check, as the pod's readiness probe: workload status
    (ready replicas) then says what the probe says."""
    probe, (port, scheme) = plan.health_probe, HEALTH_PORTS[plan.name]
    return {
        "httpGet": {"path": probe.path, "port": port, "scheme": scheme},
        "timeoutSeconds": probe.timeout_seconds,
        "failureThreshold": probe.failure_threshold,
        "periodSeconds": 5,
    }


def _default_flags(cp: ControlPlane, name: str) -> dict[str, str]:
    etcd = f"http://{_name(cp, 'etcd')}.{cp.namespace}.svc:2379"
    pki = PKI_DIR
    if name == "etcd":
        return {
            "data-dir": "/var/lib/etcd",
            "listen-client-urls": "http://0.0.0.0:2379",
            "advertise-client-urls": etcd,
        }
    if name == "kube-apiserver":
        return {
            "etcd-servers": etcd,
            "secure-port": "6443",
            "tls-cert-file": f"{pki}/apiserver.crt",
            "tls-private-key-file": f"{pki}/apiserver.key",
            "client-ca-file": f"{pki}/ca.crt",
            "authorization-mode": "Node,RBAC",
            # Hosts' kubelets join by TLS bootstrap (kokpit/controllers/cluster/bootstrap.py);
            # NodeRestriction confines each to its own Node and pods.
            "enable-bootstrap-token-auth": "true",
            "enable-admission-plugins": "NodeRestriction",
            "service-account-issuer": "https://kubernetes.default.svc",
            "service-account-key-file": f"{pki}/sa.pub",
            "service-account-signing-key-file": f"{pki}/sa.key",
            "service-cluster-ip-range": cp.service_cidr,
        }
    kubeconfig = f"{KUBECONFIG_DIR}/{KUBECONFIGS[name]}"
    flags = {
        "kubeconfig": kubeconfig,
        "authentication-kubeconfig": kubeconfig,
        "authorization-kubeconfig": kubeconfig,
        "leader-elect": "true",
    }
    if name == "kube-controller-manager":
        flags |= {
            "service-account-private-key-file": f"{pki}/sa.key",
            "root-ca-file": f"{pki}/ca.crt",
            "use-service-account-credentials": "true",
            "cluster-signing-cert-file": f"{pki}/ca.crt",
            "cluster-signing-key-file": f"{pki}/ca.key",
            # cluster-info for joining hosts, and expired bootstrap tokens deleted.
            "controllers": "*,bootstrapsigner,tokencleaner",
            **node_ipam_flags(cp.pod_cidr, cp.service_cidr),
        }
    return flags


def _flags(defaults: dict[str, str], extra: Any) -> list[str]:
    merged = {**defaults, **dict(extra)}
    return [f"--{k}={v}" for k, v in sorted(merged.items())]
