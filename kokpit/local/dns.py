"""The local meta-cluster's cluster DNS: CoreDNS on its real node, behind ``kube-dns``.

Pods of the kubernetes runtime find each other by name: etcd members dial their peers as
``<pod>.<cluster>-etcd.<namespace>.svc``, and the controller-manager and scheduler reach their
kube-apiserver as ``<cluster>-kube-apiserver.<namespace>.svc``. The real node's kubelet points
pods at :data:`CLUSTER_DNS_IP`; :func:`manifests` puts CoreDNS there, deployed by ``local up``
when the meta-cluster has a real node (kwok nodes run no containers and need no DNS).

Choices, and why:

- **Host network, a port chosen at ``up``.** The meta-cluster's kube-apiserver listens on
  loopback only, which a pod on the pod network cannot reach; on the host's network CoreDNS
  can. The port is any free one (not 53, which would need ``CAP_NET_BIND_SERVICE`` and may be
  the host's own resolver's), and ``kube-dns`` maps port 53 to it.
- **Its own identity.** CoreDNS reads Services, EndpointSlices, Pods and Namespaces with the
  client certificate of :data:`~kokpit.pki.COREDNS` (user ``kokpit:coredns``), bound to a
  ClusterRole of exactly that, from a kubeconfig in a Secret of ``kube-system``.
- **Cluster names only.** No ``forward``: names outside ``cluster.local`` are not answered
  (the meta-cluster's pods are kokpit's control planes, which need none), and a host resolver
  on loopback could not loop back through it.
- **Unprivileged.** It runs as 65532 with no capabilities and a read-only root, like the
  control-plane pods.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from kokpit.local.assets import Assets
from kokpit.local.component_images import image_names
from kokpit.local.components import Layout
from kokpit.local.kubectl import Kubectl
from kokpit.pki import COREDNS, PKI, kubeconfig

#: The ClusterIP of ``kube-dns`` (the kubelet's ``clusterDNS``), in the service range.
CLUSTER_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
NAMESPACE = "kube-system"
NAME = "coredns"
LABELS = {"k8s-app": "kube-dns"}
#: The user and group CoreDNS runs as (distroless's ``nonroot``).
RUN_AS = 65532


def corefile(port: int, ready_port: int) -> str:
    """CoreDNS's configuration: the cluster's zone from the API server, nothing else."""
    return (
        f".:{port} {{\n"
        "    errors\n"
        f"    ready :{ready_port}\n"
        f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
        "        kubeconfig /etc/coredns/kubeconfig kokpit\n"
        "        pods insecure\n"
        "        fallthrough in-addr.arpa ip6.arpa\n"
        "        ttl 5\n"
        "    }\n"
        "    cache 5\n"
        "}\n"
    )


def manifests(
    *,
    image: str,
    kubeconfig_text: str,
    port: int,
    ready_port: int,
    node_selector: Mapping[str, str],
) -> list[dict[str, Any]]:
    """RBAC, configuration, the Deployment and the ``kube-dns`` Service."""
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)}
    user = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS.user}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": COREDNS.user},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["list", "watch"],
            },
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": COREDNS.user},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": COREDNS.user,
        },
        "subjects": [user],
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {"Corefile": corefile(port, ready_port)},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "data": {"kubeconfig": base64.b64encode(kubeconfig_text.encode()).decode()},
    }
    sources = [
        {"configMap": {"name": NAME, "items": [{"key": "Corefile", "path": "Corefile"}]}},
        {"secret": {"name": NAME, "items": [{"key": "kubeconfig", "path": "kubeconfig"}]}},
    ]
    container = {
        "name": NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": port, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": port, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": ready_port, "scheme": "HTTP"},
            "periodSeconds": 2,
        },
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(LABELS)},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "hostNetwork": True,
                    "dnsPolicy": "Default",
                    "nodeSelector": dict(node_selector),
                    # Nodes kept for some pods carry a taint like the label that selects them.
                    "tolerations": [
                        {"key": k, "operator": "Equal", "value": v, "effect": "NoSchedule"}
                        for k, v in node_selector.items()
                    ],
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "fsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "projected": {"sources": sources, "defaultMode": 0o440}}
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**meta, "name": "kube-dns"},
        "spec": {
            "clusterIP": CLUSTER_DNS_IP,
            "selector": dict(LABELS),
            "ports": [
                {"name": "dns", "port": 53, "targetPort": port, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "targetPort": port, "protocol": "TCP"},
            ],
        },
    }
    return [role, binding, config, secret, deployment, service]


def deploy(
    kubectl: Kubectl,
    *,
    image: str,
    server: str,
    pki: PKI,
    node_selector: Mapping[str, str],
    ports: tuple[int, int],
    timeout_s: float = 120.0,
) -> None:
    """Apply :func:`manifests` (CoreDNS reaching the API server at ``server`` as
    :data:`~kokpit.pki.COREDNS`, on ``ports``: DNS and readiness) and wait until it is ready."""
    text = kubeconfig.render(server=server, pki=pki, who=COREDNS, cluster_name="kokpit")
    port, ready_port = ports
    objects = manifests(
        image=image,
        kubeconfig_text=text,
        port=port,
        ready_port=ready_port,
        node_selector=node_selector,
    )
    kubectl.apply(objects)
    deadline = time.monotonic() + timeout_s
    while True:
        status = kubectl.get("deployment", "-n", NAMESPACE, NAME).get("status") or {}
        if status.get("readyReplicas", 0) >= 1 and status.get("updatedReplicas", 0) >= 1:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"CoreDNS not ready after {timeout_s:.0f} s: {status}")
        time.sleep(1.0)


def start(
    layout: Layout,
    assets: Assets,
    *,
    server: str,
    node_selector: Mapping[str, str],
    progress: Callable[[str], None] = print,
) -> None:
    """``local up``'s step once real nodes run: CoreDNS from the release's image (written by
    :func:`kokpit.local.component_images.ensure_images`, imported with the others)."""
    started = time.monotonic()
    image = image_names(assets).get("coredns")
    if image is None:
        raise RuntimeError(f"{assets.root} has no coredns binary; run `kokpit local build`")
    deploy(
        Kubectl(assets.bin("kubectl"), layout.kubeconfig),
        image=image,
        server=server,
        pki=layout.pki,
        node_selector=node_selector,
        ports=(_free_port(), _free_port()),
    )
    progress(f"  {'cluster DNS (CoreDNS)':<24} ready in {time.monotonic() - started:4.1f} s")


def _free_port() -> int:
    """A port free on every interface now (CoreDNS listens on all of the host's)."""
    with socket.socket() as s:
        s.bind(("", 0))
        port: int = s.getsockname()[1]
        return port
