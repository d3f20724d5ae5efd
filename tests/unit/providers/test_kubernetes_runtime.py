"""The kubernetes runtime's workloads, as objects (nothing is sent): etcd's members, TLS and
initial cluster, the names the certificates must cover, the NetworkPolicy, placement, images
and probes. They run for real in tests/e2e/controllers/test_kube_on_kube.py."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from kokpit.cli.operator import _labels
from kokpit.local.component_images import image
from kokpit.pki import ETCD_MATERIAL, PKI
from kokpit.providers.controlplane import ComponentName, ComponentPlan, ControlPlane
from kokpit.providers.controlplane.kubernetes import (
    PKI_DIR,
    KubernetesRuntime,
    KubernetesRuntimeOptions,
    apiserver_dns_names,
    etcd_dns_names,
    etcd_members,
    rolled_out,
)
from kokpit.providers.controlplane.process import business_pki
from kokpit.runtime import Client, ClientConfig


def runtime(**options: Any) -> KubernetesRuntime:
    client = Client(ClientConfig("https://unused.invalid"))
    return KubernetesRuntime(client, KubernetesRuntimeOptions(**options))


def control_plane(etcd_replicas: int = 3) -> ControlPlane:
    return ControlPlane("team-a", "biz", "uid-1", etcd_replicas=etcd_replicas)


def workload(
    name: ComponentName, etcd_replicas: int = 3, **options: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The workload object and its pod's only container."""
    _, obj = runtime(**options)._workload(control_plane(etcd_replicas), ComponentPlan(name, "v1"))
    return obj, obj["spec"]["template"]["spec"]["containers"][0]


def flags(container: dict[str, Any]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["command"][1:])


@pytest.mark.parametrize("replicas", [1, 3, 5])
def test_etcd_members_form_one_cluster_of_the_statefulsets_stable_names(replicas: int) -> None:
    obj, container = workload("etcd", replicas)
    f = flags(container)
    assert obj["spec"]["replicas"] == replicas
    assert obj["spec"]["serviceName"] == "biz-etcd"
    pods = [f"biz-etcd-{i}" for i in range(replicas)]
    assert f["initial-cluster"] == ",".join(
        f"{pod}=https://{pod}.biz-etcd.team-a.svc:2380" for pod in pods
    )
    assert f["initial-cluster-state"] == "new"
    assert f["initial-cluster-token"] == "uid-1", "two Clusters' members never mix"
    # Each member is its pod: the name the kubelet expands, as listed in the initial cluster.
    assert f["name"] == "$(POD_NAME)"
    assert container["env"] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    assert f["initial-advertise-peer-urls"] == "https://$(POD_NAME).biz-etcd.team-a.svc:2380"
    assert f["advertise-client-urls"] == "https://$(POD_NAME).biz-etcd.team-a.svc:2379"


def test_etcd_speaks_tls_with_client_certificates_and_http_only_for_health() -> None:
    _, container = workload("etcd")
    f = flags(container)
    assert f["listen-client-urls"] == "https://0.0.0.0:2379"
    assert f["listen-peer-urls"] == "https://0.0.0.0:2380"
    assert f["client-cert-auth"] == f["peer-client-cert-auth"] == "true"
    assert f["trusted-ca-file"] == f["peer-trusted-ca-file"] == f"{PKI_DIR}/etcd-ca.crt"
    plain = {k: v for k, v in f.items() if "http://" in v}
    assert plain == {"listen-metrics-urls": "http://0.0.0.0:2381"}
    probe = container["readinessProbe"]["httpGet"]
    assert probe == {"path": "/health", "port": 2381, "scheme": "HTTP"}
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert f["data-dir"].startswith("/var/lib/etcd/")
    assert "/var/lib/etcd" in mounted
    for name in ("trusted-ca-file", "cert-file", "key-file", "peer-cert-file", "peer-key-file"):
        assert f[name].removeprefix(f"{PKI_DIR}/") in ETCD_MATERIAL["etcd"], name


def test_kube_apiserver_reaches_every_etcd_member_over_tls_with_its_own_certificate() -> None:
    _, container = workload("kube-apiserver")
    f = flags(container)
    hosts = etcd_members(control_plane()).values()
    assert f["etcd-servers"] == ",".join(f"https://{h}:2379" for h in hosts)
    for name in ("etcd-cafile", "etcd-certfile", "etcd-keyfile"):
        assert f[name].removeprefix(f"{PKI_DIR}/") in ETCD_MATERIAL["kube-apiserver"]


@pytest.mark.parametrize(
    ("name", "port", "scheme", "path"),
    [
        ("kube-apiserver", 6443, "HTTPS", "/readyz"),
        ("kube-controller-manager", 10257, "HTTPS", "/healthz"),
        ("kube-scheduler", 10259, "HTTPS", "/healthz"),
    ],
)
def test_readiness_probes_ask_each_components_secure_port(
    name: ComponentName, port: int, scheme: str, path: str
) -> None:
    _, container = workload(name)
    assert container["readinessProbe"]["httpGet"] == {"path": path, "port": port, "scheme": scheme}
    assert port in [p["containerPort"] for p in container["ports"]]
    if name != "kube-apiserver":
        assert flags(container).get("secure-port", str(port)) == str(port)


def test_pods_go_to_the_selected_nodes_with_images_of_the_repository() -> None:
    obj, container = workload(
        "kube-scheduler",
        node_selector={"kokpit.io/real-node": "true"},
        image_repository="localhost/kokpit",
    )
    pod = obj["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kokpit.io/real-node": "true"}
    assert pod["tolerations"] == [
        {"key": "kokpit.io/real-node", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ], "the real node's taint, as that node is selected"
    assert container["image"] == "localhost/kokpit/kube-scheduler:v1"
    assert container["imagePullPolicy"] == "IfNotPresent"
    default, default_container = workload("kube-scheduler")
    assert "nodeSelector" not in default["spec"]["template"]["spec"], "kwok nodes too"
    assert "tolerations" not in default["spec"]["template"]["spec"]
    assert default_container["image"] == "registry.k8s.io/kube-scheduler:v1"
    assert image("localhost/kokpit/", "etcd", "v3.6.8") == "localhost/kokpit/etcd:3.6.8-0"
    assert image("registry.k8s.io", "kube-apiserver", "v1.36.3") == (
        "registry.k8s.io/kube-apiserver:v1.36.3"
    )


def test_etcd_data_is_on_claims_of_the_storage_class_deleted_with_the_cluster() -> None:
    obj, _ = workload("etcd", etcd_storage_class="fast")
    spec = obj["spec"]
    assert spec["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    assert "data" not in [v["name"] for v in spec["template"]["spec"]["volumes"]]
    empty, _ = workload("etcd")
    assert {"name": "data", "emptyDir": {}} in empty["spec"]["template"]["spec"]["volumes"]
    assert "volumeClaimTemplates" not in empty["spec"]


def test_only_the_clusters_apiserver_reaches_etcds_clients_port() -> None:
    policy = runtime()._etcd_policy(control_plane())
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {
        "kokpit.io/cluster": "biz",
        "kokpit.io/component": "etcd",
    }
    assert spec["policyTypes"] == ["Ingress"]
    by_port = {rule["ports"][0]["port"]: rule.get("from") for rule in spec["ingress"]}
    assert by_port[2379] == [
        {
            "podSelector": {
                "matchLabels": {"kokpit.io/cluster": "biz", "kokpit.io/component": "kube-apiserver"}
            }
        }
    ]
    assert by_port[2380] == [
        {
            "podSelector": {
                "matchLabels": {"kokpit.io/cluster": "biz", "kokpit.io/component": "etcd"}
            }
        }
    ]
    assert by_port[2381] is None, "health and metrics: the kubelet probes from the node"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


@pytest.fixture
def cluster_pki(tmp_path: Path) -> PKI:
    pki = business_pki(
        tmp_path,
        "10.100.0.0/16",
        cluster="team-a/biz",
        cluster_uid="uid-1",
        dns_names=apiserver_dns_names("team-a", "biz"),
        etcd_dns=etcd_dns_names("team-a", "biz"),
    )
    pki.ensure()
    return pki


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def verifies_for(ca: Path, cert: Path, name: str) -> bool:
    store = Store([load(ca)])
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(name))
    try:
        verifier.verify(load(cert), [])
    except Exception:  # any verification error: not valid for ``name``
        return False
    return True


def test_the_serving_certificate_covers_every_name_clients_use(cluster_pki: PKI) -> None:
    rt = runtime()
    cp = dataclasses.replace(control_plane(), pki=cluster_pki.material())
    servers = [asyncio.run(rt.endpoint(cp)) or ""]
    for text in rt._kubeconfigs(cp)["data"].values():
        config = yaml.safe_load(base64.b64decode(text))
        servers += [c["cluster"]["server"] for c in config["clusters"]]
    assert len(servers) == 3
    names = [
        *(urllib.parse.urlsplit(s).hostname or "" for s in servers),
        "biz-kube-apiserver",
        "biz-kube-apiserver.team-a",
        "biz-kube-apiserver.team-a.svc",
        "biz-kube-apiserver.team-a.svc.cluster.local",
        "localhost",
        "kubernetes.default.svc",
    ]
    for name in names:
        assert verifies_for(cluster_pki.ca_cert, cluster_pki.serving_cert, name), name
    assert not verifies_for(cluster_pki.ca_cert, cluster_pki.serving_cert, "biz-etcd.team-a.svc")


def test_etcd_certificates_come_from_a_ca_of_their_own(cluster_pki: PKI) -> None:
    etcd_ca = cluster_pki.dir / "etcd-ca.crt"
    for host in etcd_members(control_plane(5)).values():
        assert verifies_for(etcd_ca, cluster_pki.dir / "etcd-server.crt", host), host
        assert verifies_for(etcd_ca, cluster_pki.dir / "etcd-peer.crt", host), host
    assert not verifies_for(etcd_ca, cluster_pki.dir / "etcd-server.crt", "biz-etcd-0.x.team-b.svc")

    def client_ok(ca: Path, cert: Path) -> bool:
        argv = ["openssl", "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"]
        done = subprocess.run([*argv, str(ca), str(cert)], capture_output=True, check=False)
        return done.returncode == 0

    d = cluster_pki.dir
    assert client_ok(etcd_ca, d / "apiserver-etcd-client.crt")
    assert client_ok(etcd_ca, d / "etcd-peer.crt"), "members dial each other with it"
    # What the cluster CA signs (admins, kubelets via the csrsigning controller) opens no etcd.
    assert not client_ok(etcd_ca, d / "admin.crt")
    assert not client_ok(cluster_pki.ca_cert, d / "apiserver-etcd-client.crt")
    assert load(etcd_ca).subject != load(cluster_pki.ca_cert).subject


def test_a_serving_certificate_without_the_service_names_is_issued_again(tmp_path: Path) -> None:
    """A Cluster whose PKI Secret was made before the Service names were wanted gets a new
    serving certificate (rolled out like a renewal), and nothing else changes."""
    old = business_pki(tmp_path, "10.100.0.0/16", cluster="team-a/biz", cluster_uid="uid-1")
    old.ensure()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    now = business_pki(
        tmp_path,
        "10.100.0.0/16",
        cluster="team-a/biz",
        cluster_uid="uid-1",
        dns_names=apiserver_dns_names("team-a", "biz"),
    )
    now.ensure()
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after["apiserver.crt"] != before["apiserver.crt"]
    assert verifies_for(now.ca_cert, now.serving_cert, "biz-kube-apiserver.team-a.svc")
    assert {k for k in before if before[k] != after[k]} == {"apiserver.crt", "apiserver.key"}
    again = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    now.ensure()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == again


def test_the_node_selector_flag_parses_labels() -> None:
    assert _labels("kokpit.io/real-node=true") == {"kokpit.io/real-node": "true"}
    assert _labels("a=1,b=") == {"a": "1", "b": ""}
    for bad in ("", "a", "=1", "a=1,b"):
        with pytest.raises(Exception, match="key=value"):
            _labels(bad)


def workload_status(kind: str, **status: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"generation": 2},
        "spec": {"replicas": 1 if kind == "Deployment" else 3},
        "status": {"observedGeneration": 2, **status},
    }


def test_a_rollout_is_done_only_when_no_old_replica_is_left_and_all_are_ready() -> None:
    # Mid-rollout: the new pod is not ready, the old one still is (ready counts both).
    mid = workload_status("Deployment", replicas=2, updatedReplicas=1, readyReplicas=1)
    assert rolled_out(mid) == (False, "1 old replicas still running")
    new_ready = workload_status("Deployment", replicas=2, updatedReplicas=1, readyReplicas=2)
    assert not rolled_out(new_ready)[0], "the old pod is still there"
    done = workload_status("Deployment", replicas=1, updatedReplicas=1, readyReplicas=1)
    assert rolled_out(done) == (True, "")
    unseen = {**done, "metadata": {"generation": 3}}
    assert not rolled_out(unseen)[0]
    not_ready = workload_status("Deployment", replicas=1, updatedReplicas=1, readyReplicas=0)
    assert rolled_out(not_ready) == (False, "0/1 replicas ready")
    sts = {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 3}
    mid_sts = workload_status("StatefulSet", currentRevision="a", updateRevision="b", **sts)
    assert not rolled_out(mid_sts)[0]
    done_sts = workload_status("StatefulSet", currentRevision="b", updateRevision="b", **sts)
    assert rolled_out(done_sts) == (True, "")
