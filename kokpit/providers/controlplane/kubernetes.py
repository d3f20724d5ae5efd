"""The ``kubernetes`` runtime: a business control plane as workloads of the meta-cluster.

The production kube-on-kube form. etcd is a StatefulSet behind a headless Service; the other
components are Deployments; kube-apiserver has a Service that is the cluster's endpoint. Each
mounts only its own files of the Cluster's PKI Secret and of the kubeconfigs Secret (``items``;
which ones: :data:`~kokpit.pki.MATERIAL`), runs as a fixed non-root user with a
read-only root filesystem, no capabilities and the runtime's default seccomp profile; all are
owned by the Cluster (so the garbage collector removes what an interrupted delete left), and
are written by server-side apply, so applying a plan twice changes nothing. Health is the
workloads' own status: the rollout complete (:func:`rolled_out`: every replica runs the plan,
none of an older one is left) and every replica ready, as each pod's readiness probe says
(:data:`HEALTH_PORTS`).

etcd. Members are the StatefulSet's pods, ``<cluster>-etcd-<i>``, found by their stable names
under the headless Service (``<pod>.<cluster>-etcd.<namespace>.svc``, published before they
are ready so that members can find each other while the cluster forms): ``--initial-cluster``
lists all ``etcdReplicas`` of them (1, 3 or 5), with the Cluster's uid as the cluster token.
Clients and peers speak TLS only, with client certificates of etcd's own CA
(:data:`~kokpit.pki.ETCD_MATERIAL`): the only client is the Cluster's kube-apiserver. The
readiness probe asks ``/health`` on ``--listen-metrics-urls`` (port 2381, plain HTTP, health
and metrics only, no keys): the kubelet's HTTP probes present no client certificate, which
the client port requires, and an exec probe would need etcdctl in the image. The data
directory is a PersistentVolumeClaim of :attr:`KubernetesRuntimeOptions.etcd_storage_class`
(deleted with the StatefulSet), or else an emptyDir. **An emptyDir is for clusters whose etcd
pods are never replaced** (kwok's scale runs): it survives container restarts, not a pod's
replacement, and an etcd upgrade replaces every pod in turn. A member that lost its data
refuses to start (``--initial-cluster-state new``: "member ... has already been
bootstrapped"), and a single member starts an empty cluster. Anything real needs a storage
class.

The NetworkPolicy ``<cluster>-etcd`` admits to etcd's client port only the Cluster's
kube-apiserver pods, to its peer port only its other members, and to its health and metrics
port anyone (the kubelet's probe). It is enforced only where the network plugin implements
NetworkPolicy: **the local meta-cluster's bridge CNI does not**, so there it documents intent
and the client certificates are what keep other pods out. kube-apiserver gets no policy: it is
the cluster's endpoint, for its users, nodes and kokpit, who authenticate with certificates.

Placement and images: :attr:`KubernetesRuntimeOptions.node_selector` picks the nodes (the
local meta-cluster's real node has ``kokpit.io/real-node: "true"``, and a taint of the same
key and value that the pods then tolerate; by default any untainted node, kwok's included),
and :attr:`~KubernetesRuntimeOptions.image_repository` where the images come from, as
kubeadm's ``imageRepository`` (``localhost/kokpit`` for the images
:mod:`kokpit.local.component_images` writes; pulled only if not present).

On kwok nodes, which run no containers, the runtime exercises scheduling, rollout and status
at scale, not the components themselves; on a real node they run.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kokpit.api.v1alpha1.cluster import DerivedSuffix, object_name
from kokpit.local.component_images import image
from kokpit.local.components import node_ipam_flags
from kokpit.pki import ETCD_MATERIAL, MATERIAL
from kokpit.pki.kubeconfig import render_data
from kokpit.providers.controlplane import (
    CRASH_LOOP_BACK_OFF,
    NOT_FOUND,
    REPLICAS_NOT_READY,
    ComponentHealth,
    ComponentName,
    ComponentPlan,
    ControlPlane,
    PlanError,
)
from kokpit.runtime import Client, Forbidden, NotFound, Resource, controlled_by
from kokpit.runtime.resources import (
    DEPLOYMENTS,
    NETWORKPOLICIES,
    PODS,
    SECRETS,
    SERVICES,
    STATEFULSETS,
)

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
#: Where the images come from by default (kubeadm's default ``imageRepository``).
IMAGE_REPOSITORY = "registry.k8s.io"
#: The meta-cluster's DNS domain, which Service names end with.
CLUSTER_DOMAIN = "cluster.local"
#: etcd's ports: clients (TLS), peers (TLS), and health and metrics (HTTP, see above).
ETCD_CLIENT_PORT, ETCD_PEER_PORT, ETCD_METRICS_PORT = 2379, 2380, 2381
APISERVER_PORT = 6443


@dataclass(frozen=True)
class KubernetesRuntimeOptions:
    field_manager: str = "kokpit-cluster-operator"
    #: etcd's volume: a PersistentVolumeClaim of this storage class, or an emptyDir when None
    #: (the local meta-cluster has no storage provisioner).
    etcd_storage_class: str | None = None
    etcd_storage: str = "8Gi"
    #: Labels of the nodes control-plane pods may run on (empty: any node).
    node_selector: Mapping[str, str] = field(default_factory=dict)
    #: Where images come from when the package version names none (see :func:`image`).
    image_repository: str = IMAGE_REPOSITORY


def apiserver_dns_names(
    namespace: str, cluster: str, domain: str = CLUSTER_DOMAIN
) -> tuple[str, ...]:
    """Every name of the Cluster's kube-apiserver Service that a client may use: short (same
    namespace), namespaced, ``.svc`` (the endpoint and the kubeconfigs) and fully qualified."""
    svc = object_name(cluster, "kube-apiserver")
    return (svc, f"{svc}.{namespace}", f"{svc}.{namespace}.svc", f"{svc}.{namespace}.svc.{domain}")


def etcd_dns_names(namespace: str, cluster: str, domain: str = CLUSTER_DOMAIN) -> tuple[str, ...]:
    """The names etcd's members serve and dial each other by: any member of the headless
    Service (one label of wildcard: ``<pod>.<svc>``), and the Service itself."""
    svc = f"{object_name(cluster, 'etcd')}.{namespace}.svc"
    return (f"*.{svc}", f"*.{svc}.{domain}", svc, f"{svc}.{domain}")


class KubernetesRuntime:
    def __init__(self, client: Client, options: KubernetesRuntimeOptions | None = None) -> None:
        self.client = client
        self.options = options or KubernetesRuntimeOptions()

    async def apply(self, cp: ControlPlane, plan: ComponentPlan) -> None:
        if plan.name == "etcd":
            await self._apply(NETWORKPOLICIES, self._etcd_policy(cp))
            ports = {"client": ETCD_CLIENT_PORT, "peer": ETCD_PEER_PORT}
            await self._apply(SERVICES, self._service(cp, "etcd", ports, headless=True))
        if plan.name == "kube-apiserver":
            ports = {"https": APISERVER_PORT}
            await self._apply(SERVICES, self._service(cp, "kube-apiserver", ports))
        if plan.name in ("kube-controller-manager", "kube-scheduler"):
            await self._apply(SECRETS, self._kubeconfigs(cp))
        resource, workload = self._workload(cp, plan)
        await self._apply(resource, workload)

    async def health(self, cp: ControlPlane, name: ComponentName) -> ComponentHealth:
        resource = STATEFULSETS if name == "etcd" else DEPLOYMENTS
        try:
            obj = await self.client.get(resource, _name(cp, name), namespace=cp.namespace)
        except NotFound:
            return ComponentHealth(False, None, f"{name} does not exist", reason=NOT_FOUND)
        meta = obj["metadata"]
        version = (meta.get("labels") or {}).get("kokpit.io/version")
        digest = (meta.get("annotations") or {}).get(PLAN_ANNOTATION)
        done, detail = rolled_out(obj)
        if done:
            return ComponentHealth(True, version, plan=digest)
        crashing = await self._crash_looping(cp, name)
        if crashing:
            return ComponentHealth(
                False, version, f"{detail}; {crashing}", digest, CRASH_LOOP_BACK_OFF
            )
        return ComponentHealth(False, version, detail, digest, REPLICAS_NOT_READY)

    async def _crash_looping(self, cp: ControlPlane, name: ComponentName) -> str | None:
        """Which of ``name``'s containers the kubelet backs off restarting, and what it says
        about it (its own words, cut short), if one is: kokpit does not restart containers, it
        reports them (the Cluster turns Degraded)."""
        selector = f"kokpit.io/cluster={cp.name},kokpit.io/component={name}"
        try:
            pods = await self.client.list(PODS, namespace=cp.namespace, label_selector=selector)
        except Forbidden:  # an older role without pods/list: report the replicas only
            return None
        for pod in pods.items:
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (container.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") != CRASH_LOOP_BACK_OFF:
                    continue
                said = str(waiting.get("message") or "")[:200]
                return (
                    f"pod {pod['metadata']['name']}: container {container.get('name')} is in "
                    f"CrashLoopBackOff after {container.get('restartCount', 0)} restarts"
                    + (f" ({said})" if said else "")
                )
        return None

    async def endpoint(self, cp: ControlPlane) -> str | None:
        return _apiserver_url(cp)

    async def delete(self, cp: ControlPlane) -> None:
        owned: tuple[tuple[Resource, DerivedSuffix], ...] = (
            (DEPLOYMENTS, "kube-scheduler"),
            (DEPLOYMENTS, "kube-controller-manager"),
            (DEPLOYMENTS, "kube-apiserver"),
            (SERVICES, "kube-apiserver"),
            (STATEFULSETS, "etcd"),
            (SERVICES, "etcd"),
            (NETWORKPOLICIES, "etcd"),
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
        self,
        cp: ControlPlane,
        component: DerivedSuffix,
        ports: Mapping[str, int],
        *,
        headless: bool = False,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "selector": _selector(cp, component),
            "ports": [
                {"name": name, "port": port, "targetPort": port, "protocol": "TCP"}
                for name, port in ports.items()
            ],
        }
        if headless:
            spec |= {"clusterIP": "None", "publishNotReadyAddresses": True}
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self._meta(cp, component),
            "spec": spec,
        }

    def _etcd_policy(self, cp: ControlPlane) -> dict[str, Any]:
        """Only the Cluster's kube-apiserver reaches etcd's clients port, only its members the
        peers port; the health and metrics port is open (kubelet probes come from the node).
        See the module docstring for where this is enforced."""

        def port(number: int) -> list[dict[str, Any]]:
            return [{"port": number, "protocol": "TCP"}]

        def pods(component: DerivedSuffix) -> dict[str, Any]:
            return {"podSelector": {"matchLabels": _selector(cp, component)}}

        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": self._meta(cp, "etcd"),
            "spec": {
                "podSelector": {"matchLabels": _selector(cp, "etcd")},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [pods("kube-apiserver")], "ports": port(ETCD_CLIENT_PORT)},
                    {"from": [pods("etcd")], "ports": port(ETCD_PEER_PORT)},
                    {"ports": port(ETCD_METRICS_PORT)},
                ],
            },
        }

    def _kubeconfigs(self, cp: ControlPlane) -> dict[str, Any]:
        server = _apiserver_url(cp)
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
        labels = _selector(cp, plan.name)
        volumes, mounts = _volumes(cp, plan.name, self.options.etcd_storage_class is None)
        container: dict[str, Any] = {
            "name": plan.name,
            "image": plan.image or image(self.options.image_repository, plan.name, plan.version),
            "imagePullPolicy": "IfNotPresent",
            "command": [plan.name, *_flags(_default_flags(cp, plan.name), plan.flags)],
            "ports": [
                {"name": name, "containerPort": port, "protocol": "TCP"}
                for name, port in CONTAINER_PORTS[plan.name].items()
            ],
            "volumeMounts": mounts,
            "readinessProbe": _readiness_probe(plan),
            "securityContext": CONTAINER_SECURITY,
        }
        if plan.name == "etcd":  # each member's name is its pod's (see _etcd_flags)
            field_ref = {"fieldRef": {"fieldPath": "metadata.name"}}
            container["env"] = [{"name": "POD_NAME", "valueFrom": field_ref}]
        pod: dict[str, Any] = {
            "containers": [container],
            "volumes": volumes,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": POD_SECURITY,
        }
        if self.options.node_selector:
            pod["nodeSelector"] = dict(self.options.node_selector)
            pod["tolerations"] = tolerations(self.options.node_selector)
        template: dict[str, Any] = {
            "metadata": {"labels": {**labels, "kokpit.io/version": plan.version}},
            "spec": pod,
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
                # Removed with the StatefulSet (so with the Cluster), kept when scaled down.
                spec["persistentVolumeClaimRetentionPolicy"] = {
                    "whenDeleted": "Delete",
                    "whenScaled": "Retain",
                }
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


def rolled_out(workload: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether a Deployment's or StatefulSet's rollout is complete, as ``kubectl rollout
    status`` says it (and if not, why): the controller saw the latest spec, every replica runs
    it, *no replica of an older revision is left*, and all are ready. Ready replicas alone do
    not say it: mid-rollout a Deployment counts the old pod, still ready, next to the new
    one, not ready yet."""
    meta, spec, status = workload["metadata"], workload["spec"], workload.get("status") or {}
    want = spec.get("replicas", 1)
    total, updated = status.get("replicas", 0), status.get("updatedReplicas", 0)
    ready = status.get("readyReplicas", 0)
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return False, "the rollout has not started yet"
    if updated < want:
        return False, f"{updated}/{want} replicas updated"
    if total > updated:
        return False, f"{total - updated} old replicas still running"
    if workload.get("kind") == "StatefulSet" and status.get("currentRevision") != status.get(
        "updateRevision"
    ):
        return False, "the StatefulSet's update is not complete"
    if ready < want:
        return False, f"{ready}/{want} replicas ready"
    return True, ""


def _name(cp: ControlPlane, suffix: DerivedSuffix) -> str:
    return object_name(cp.name, suffix)


def tolerations(node_selector: Mapping[str, str]) -> list[dict[str, str]]:
    """Nodes kept for some pods carry a label and a ``NoSchedule`` taint of the same key and
    value (the local meta-cluster's real nodes: ``kokpit.io/real-node=true``): pods that select
    them by the label tolerate the taint, and no other."""
    return [
        {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}
        for key, value in node_selector.items()
    ]


def _selector(cp: ControlPlane, component: DerivedSuffix) -> dict[str, str]:
    return {"kokpit.io/cluster": cp.name, "kokpit.io/component": component}


def _apiserver_url(cp: ControlPlane) -> str:
    return f"https://{_name(cp, 'kube-apiserver')}.{cp.namespace}.svc:{APISERVER_PORT}"


def etcd_members(cp: ControlPlane) -> dict[str, str]:
    """Each etcd member's name (its pod's) and host (its name under the headless Service)."""
    sts = _name(cp, "etcd")
    return {f"{sts}-{i}": f"{sts}-{i}.{sts}.{cp.namespace}.svc" for i in range(cp.etcd_replicas)}


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
    if files := pod_material(component):
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
        mounts.append({"name": "data", "mountPath": ETCD_VOLUME})
    return volumes, mounts


def pod_material(component: str) -> tuple[str, ...]:
    """The PKI files ``component``'s pod mounts: :data:`~kokpit.pki.MATERIAL` and etcd's TLS."""
    return (*MATERIAL[component], *ETCD_MATERIAL.get(component, ()))


#: etcd's volume, and its data directory inside: a directory etcd creates itself, so it has
#: the 0700 mode etcd wants whatever the volume's own mode (an emptyDir's is 0777).
ETCD_VOLUME = "/var/lib/etcd"
ETCD_DATA = f"{ETCD_VOLUME}/data"
#: The ports each component's container serves, by name.
CONTAINER_PORTS: dict[str, dict[str, int]] = {
    "etcd": {"client": ETCD_CLIENT_PORT, "peer": ETCD_PEER_PORT, "metrics": ETCD_METRICS_PORT},
    "kube-apiserver": {"https": APISERVER_PORT},
    "kube-controller-manager": {"https": 10257},
    "kube-scheduler": {"https": 10259},
}
#: The port and scheme each component serves its health endpoints on: the secure ports of the
#: Kubernetes components (``/healthz``, ``/readyz`` are open to anonymous requests there), and
#: etcd's metrics port (see the module docstring).
HEALTH_PORTS: dict[str, tuple[int, str]] = {
    "etcd": (ETCD_METRICS_PORT, "HTTP"),
    "kube-apiserver": (APISERVER_PORT, "HTTPS"),
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


def _etcd_flags(cp: ControlPlane) -> dict[str, str]:
    """A member of the Cluster's etcd: named after its pod (``$(POD_NAME)``, expanded by the
    kubelet), TLS with client certificates towards clients and peers, and the initial cluster
    of every member's stable name (see the module docstring)."""
    pki, me = PKI_DIR, f"$(POD_NAME).{_name(cp, 'etcd')}.{cp.namespace}.svc"
    members = etcd_members(cp)
    return {
        "name": "$(POD_NAME)",
        "data-dir": ETCD_DATA,
        "listen-client-urls": f"https://0.0.0.0:{ETCD_CLIENT_PORT}",
        "advertise-client-urls": f"https://{me}:{ETCD_CLIENT_PORT}",
        "listen-peer-urls": f"https://0.0.0.0:{ETCD_PEER_PORT}",
        "initial-advertise-peer-urls": f"https://{me}:{ETCD_PEER_PORT}",
        "initial-cluster": ",".join(
            f"{name}=https://{host}:{ETCD_PEER_PORT}" for name, host in members.items()
        ),
        "initial-cluster-state": "new",
        "initial-cluster-token": cp.uid,
        "listen-metrics-urls": f"http://0.0.0.0:{ETCD_METRICS_PORT}",
        "client-cert-auth": "true",
        "trusted-ca-file": f"{pki}/etcd-ca.crt",
        "cert-file": f"{pki}/etcd-server.crt",
        "key-file": f"{pki}/etcd-server.key",
        "peer-client-cert-auth": "true",
        "peer-trusted-ca-file": f"{pki}/etcd-ca.crt",
        "peer-cert-file": f"{pki}/etcd-peer.crt",
        "peer-key-file": f"{pki}/etcd-peer.key",
    }


def _default_flags(cp: ControlPlane, name: str) -> dict[str, str]:
    pki = PKI_DIR
    if name == "etcd":
        return _etcd_flags(cp)
    if name == "kube-apiserver":
        servers = (f"https://{host}:{ETCD_CLIENT_PORT}" for host in etcd_members(cp).values())
        return {
            "etcd-servers": ",".join(servers),
            "etcd-cafile": f"{pki}/etcd-ca.crt",
            "etcd-certfile": f"{pki}/apiserver-etcd-client.crt",
            "etcd-keyfile": f"{pki}/apiserver-etcd-client.key",
            "secure-port": str(APISERVER_PORT),
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
