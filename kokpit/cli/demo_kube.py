"""The kube-on-kube part of ``kokpit demo``: a business cluster whose control plane runs as pods
on the meta-cluster's real node (the ``kubernetes`` runtime), reached with kubectl through its
Service.

One etcd member, on an emptyDir (the local meta-cluster has no storage provisioner): enough to
show the control plane running; the e2e tests run three members on volumes, and upgrade them.
The host reaches the Service's ClusterIP through the real node's kube-proxy but does not
resolve ``.svc`` names, so the demo's kubeconfig names the ClusterIP and still checks the
serving certificate for the Service's DNS name (``tls-server-name``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kokpit.api.v1alpha1.cluster import object_name
from kokpit.cli.demo_business import (
    NAMESPACE,
    OperatorThread,
    at,
    replace_package_versions,
    version,
    wait_for,
)
from kokpit.local import Kubectl
from kokpit.local.versions import RELEASES
from kokpit.providers.controlplane.releases import cluster_package

NAME = "team-b"
RELEASE = RELEASES[0]
PACKAGE = f"k8s-{RELEASE.version}-pods"


def create(kubectl: Kubectl) -> None:
    """Create the Cluster; it comes up while the demo goes on (see :func:`story`)."""
    # Real pods take longer than processes to pass their checks: a longer deadline.
    replace_package_versions(kubectl, [cluster_package(PACKAGE, RELEASE, deadline_seconds=180)])
    kubectl.apply(
        [
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": NAME, "namespace": NAMESPACE},
                "spec": {
                    "packageVersion": PACKAGE,
                    "runtime": "kubernetes",
                    "controlPlane": {"etcdReplicas": 1, "replicas": 1},
                },
            }
        ]
    )


def story(
    operator: OperatorThread, kubectl: Kubectl, root: Path, say: Callable[[str], None]
) -> Kubectl:
    """Wait for the Cluster made by :func:`create`, show its pods and kubectl through its
    Service; returns that kubectl."""
    say(
        f"   Cluster {NAMESPACE}/{NAME} → ClusterPackageVersion {PACKAGE}, runtime kubernetes, "
        "1 etcd member (the tests run 3)"
    )
    wait_for(operator, at(RELEASE.version), "become Ready", timeout=300, name=NAME)
    pods = kubectl.get("pods", "-n", NAMESPACE, "-l", f"kokpit.io/cluster={NAME}")["items"]
    width = max((len(p["metadata"]["name"]) for p in pods), default=0)
    for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
        name, node = pod["metadata"]["name"], pod["spec"].get("nodeName")
        say(f"   pod {name:<{width}}  on {node}  {_ready(pod)}")
    business = via_service(kubectl, root)
    server = json.loads(business.kubeconfig.read_text())["clusters"][0]["cluster"]
    namespaces = business.get("namespaces")["items"]
    say(
        f"   kubectl through its Service {server['server']} "
        f"(certificate checked for {server['tls-server-name']}): {version(business)}, "
        f"{len(namespaces)} namespaces"
    )
    return business


def via_service(kubectl: Kubectl, root: Path) -> Kubectl:
    """kubectl for the business cluster at its Service's ClusterIP (see the module docstring),
    with the admin kubeconfig the operator wrote."""
    secret = kubectl.get("secret", "-n", NAMESPACE, f"{NAME}-admin-kubeconfig")
    config: dict[str, Any] = json.loads(base64.b64decode(secret["data"]["value"]))
    service_name = object_name(NAME, "kube-apiserver")
    service = kubectl.get("service", "-n", NAMESPACE, service_name)
    cluster = config["clusters"][0]["cluster"]
    port = service["spec"]["ports"][0]["port"]
    cluster["tls-server-name"] = f"{service_name}.{NAMESPACE}.svc"
    cluster["server"] = f"https://{service['spec']['clusterIP']}:{port}"
    path = root / f"{NAME}.kubeconfig"
    path.touch(mode=0o600)
    path.write_text(json.dumps(config))
    return Kubectl(kubectl.binary, path)


def _ready(pod: dict[str, Any]) -> str:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    ready = sum(bool(s.get("ready")) for s in statuses)
    return f"{ready}/{len(pod['spec']['containers'])} ready"
