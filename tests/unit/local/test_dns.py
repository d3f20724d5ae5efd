"""The meta-cluster's CoreDNS, as objects: kube-dns at the kubelet's clusterDNS, the
cluster zone from the API server with its own identity, unprivileged. It resolves for real
in tests/e2e/controllers/test_kube_on_kube.py."""

from __future__ import annotations

import base64
import json
from typing import Any

from kokpit.local import dns
from kokpit.pki import COREDNS


def objects() -> dict[str, dict[str, Any]]:
    found = dns.manifests(
        image="localhost/kokpit/coredns:v1.14.7",
        kubeconfig_text='{"kind": "Config"}',
        port=10053,
        ready_port=18181,
        node_selector={"kokpit.io/real-node": "true"},
    )
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in found}


def test_kube_dns_is_at_the_kubelets_cluster_dns_and_reaches_coredns() -> None:
    found = objects()
    service = found["Service/kube-dns"]
    assert service["metadata"]["namespace"] == "kube-system"
    assert service["spec"]["clusterIP"] == "10.96.0.10"
    ports = {(p["protocol"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {("UDP", 53, 10053), ("TCP", 53, 10053)}
    pod = found["Deployment/coredns"]["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["nodeSelector"] == {"kokpit.io/real-node": "true"}
    assert pod["spec"]["tolerations"] == [
        {"key": "kokpit.io/real-node", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    corefile = found["ConfigMap/coredns"]["data"]["Corefile"]
    assert corefile.startswith(".:10053 {")
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in corefile
    assert "ready :18181" in corefile
    probe = pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert probe == {"path": "/ready", "port": 18181, "scheme": "HTTP"}
    assert "forward" not in corefile, "cluster names only"


def test_coredns_reads_what_it_needs_as_its_own_user_and_runs_unprivileged() -> None:
    found = objects()
    role = found[f"ClusterRole/{COREDNS.user}"]
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert verbs == {"list", "watch"}
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert resources == {"services", "pods", "namespaces", "endpointslices"}
    subjects = found[f"ClusterRoleBinding/{COREDNS.user}"]["subjects"]
    assert [s["name"] for s in subjects] == [COREDNS.user]
    secret = found["Secret/coredns"]
    assert json.loads(base64.b64decode(secret["data"]["kubeconfig"])) == {"kind": "Config"}
    spec = found["Deployment/coredns"]["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsUser"] != 0
    container = spec["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["automountServiceAccountToken"] is False
    assert container["args"] == ["-conf", "/etc/coredns/Corefile"]
