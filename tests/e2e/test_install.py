"""Installing kokpit into a meta-cluster (config/default, config/install.yaml, ``kokpit
install`` and ``kokpit uninstall``) on a real control plane with KWOK nodes, which play the
operators' pods (no image is pulled: what runs in them is not under test here).

The module runs a meta-cluster of its own: it installs, upgrades and uninstalls cluster-wide
objects (CRDs' labels, ClusterRoles, admission policies) that other modules' tests rely on in
the session's cluster. Its tests run in file order; the last one uninstalls.

Each ServiceAccount's permissions, as ``kubectl auth can-i --list`` shows them, must match
``tests/e2e/expected-permissions/<operator>.txt``: a role that grows fails the test until the
file is updated on purpose (``KOKPIT_WRITE_EXPECTED_PERMISSIONS=1`` rewrites the files and
fails, so that the new lists are read before they are committed).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kokpit.cli import install
from kokpit.local import Assets, Kubectl, KubectlError, LocalCluster
from kokpit.local import nodes as kwok_nodes
from tests.e2e.support import install_crds

CONFIG = Path(__file__).parents[2] / "config"
EXPECTED = Path(__file__).parent / "expected-permissions"
WRITE_EXPECTED = os.environ.get("KOKPIT_WRITE_EXPECTED_PERMISSIONS") == "1"
#: The operators config/default runs, and the guard's identity (installed; its Deployment is not).
OPERATORS = ("cluster", "machine", "remediation", "rollout", "probe")
SERVICE_ACCOUNTS = (*OPERATORS, "guard")
#: The users' namespace where the tests bind the operators' namespaced roles.
USERS = "fleet"
#: What `kubectl get` lists to see every kind install.yaml holds.
KINDS = ",".join(f"{r.plural}.{r.group}" if r.group else r.plural for r in install.ORDER)

Object = dict[str, Any]


@pytest.fixture(scope="module")
def meta(assets: Assets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("install-meta"))
    cluster.up(assets, progress=lambda _: None)
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def k(meta: LocalCluster, assets: Assets) -> Kubectl:
    """kubectl on the module's meta-cluster, with two KWOK nodes for the operators' pods."""
    kubectl = Kubectl(assets.bin("kubectl"), meta.kubeconfig)
    names = kwok_nodes.ensure_nodes(kubectl, 2)
    kwok_nodes.wait_ready(kubectl, names)
    kubectl.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": USERS}}])
    return kubectl


def kokpit(k: Kubectl, *args: str) -> subprocess.CompletedProcess[str]:
    """``kokpit ARGS`` as a person runs it, against the module's meta-cluster."""
    return subprocess.run(
        [sys.executable, "-m", "kokpit", *args, "--kubeconfig", str(k.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def installed(k: Kubectl) -> dict[tuple[str, str, str], Object]:
    """Every object of install.yaml's kinds that carries kokpit's label, by (kind, namespace,
    name)."""
    items = k.get(KINDS, "-A", "-l", "app.kubernetes.io/part-of=kokpit")["items"]
    return {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in items
    }


def manifest_keys() -> set[tuple[str, str, str]]:
    return {(m.resource.kind, m.namespace or "", m.name) for m in install.load(install.MANIFESTS)}


def identity(obj: Object) -> tuple[str, object]:
    """What stays the same while an object is not written: its uid and, for kinds whose
    controllers write their status, the generation of its spec (else the resourceVersion)."""
    meta = obj["metadata"]
    return meta["uid"], meta.get("generation", meta["resourceVersion"])


def wait_ready(k: Kubectl, timeout: float = 120.0) -> None:
    """Until every Deployment of kokpit has both replicas Ready (KWOK plays the pods)."""
    deadline = time.monotonic() + timeout
    while True:
        deployments = k.get("deployments", "-n", "kokpit-system")["items"]
        ready = {
            d["metadata"]["name"]: (d.get("status") or {}).get("readyReplicas", 0)
            for d in deployments
        }
        if len(ready) == len(OPERATORS) and all(n == 2 for n in ready.values()):
            return
        assert time.monotonic() < deadline, f"Deployments not ready: {ready}"
        time.sleep(1)


def test_install_yaml_is_what_config_default_renders(assets: Assets) -> None:
    assert install.render(assets.bin("kubectl")) == install.MANIFESTS.read_text(), (
        "config/install.yaml is stale: run `make generate`"
    )


def test_dry_run_prints_the_manifests_and_changes_nothing(k: Kubectl) -> None:
    before = {key: identity(o) for key, o in installed(k).items()}
    namespaces = {n["metadata"]["name"] for n in k.get("namespaces")["items"]}
    done = kokpit(k, "install", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "kind: CustomResourceDefinition" in done.stdout
    assert {key: identity(o) for key, o in installed(k).items()} == before
    assert {n["metadata"]["name"] for n in k.get("namespaces")["items"]} == namespaces
    assert "kokpit-system" not in namespaces


def test_kubectl_apply_k_installs_everything_and_again_changes_nothing(k: Kubectl) -> None:
    k.run("apply", "-k", str(CONFIG / "default"))
    objects = installed(k)
    assert set(objects) == manifest_keys()
    for operator in OPERATORS:
        name = f"kokpit-{operator}-operator"
        for kind, obj_name in (
            ("Deployment", name),
            ("Service", f"{name}-metrics"),
            ("PodDisruptionBudget", name),
        ):
            assert (kind, "kokpit-system", obj_name) in objects
    assert ("NetworkPolicy", "kokpit-system", "kokpit-operators") in objects
    wait_ready(k)
    first = {key: identity(o) for key, o in objects.items()}
    # kubectl says "configured" for PodDisruptionBudgets and admission policies that it
    # patches with what they hold already; the API server writes nothing for such a patch.
    out = k.run("apply", "-k", str(CONFIG / "default"))
    assert "created" not in out, out
    assert {key: identity(o) for key, o in installed(k).items()} == first


def test_kokpit_install_over_an_install_upgrades_in_place(k: Kubectl) -> None:
    """Over what `kubectl apply -k` made: the same objects (uids), the Deployments' image
    changed, nothing else written; a second run writes nothing at all."""
    k.run("apply", "-k", str(CONFIG / "default"))
    before = installed(k)
    done = kokpit(k, "install", "--image", "registry.test/kokpit:next")
    assert done.returncode == 0, done.stderr
    assert "applied 10 CustomResourceDefinitions, Established" in done.stdout
    after = installed(k)
    assert set(after) == set(before) == manifest_keys()
    for key, obj in after.items():
        assert obj["metadata"]["uid"] == before[key]["metadata"]["uid"], key
        if key[0] == "Deployment":
            (container,) = obj["spec"]["template"]["spec"]["containers"]
            assert container["image"] == "registry.test/kokpit:next"
    wait_ready(k)
    settled = {key: identity(o) for key, o in installed(k).items()}
    again = kokpit(k, "install", "--image", "registry.test/kokpit:next")
    assert again.returncode == 0, again.stderr
    assert {key: identity(o) for key, o in installed(k).items()} == settled


def bind(k: Kubectl, operator: str, namespace: str) -> None:
    """What an admin does per namespace (the top of each config/rbac file)."""
    name = f"kokpit-{operator}-operator"
    k.run(
        "create",
        "rolebinding",
        name,
        "-n",
        namespace,
        f"--clusterrole={name}-namespaced",
        f"--serviceaccount=kokpit-system:{name}",
    )


def permissions(k: Kubectl, account: str) -> str:
    """``kubectl auth can-i --list`` as ``account``: in a namespace where nothing of kokpit's
    is bound (what it may do cluster-wide), in kokpit-system, in ``default`` and in the users'
    namespace where its namespaced role is bound."""
    who = f"--as=system:serviceaccount:kokpit-system:kokpit-{account}-operator"
    sections = []
    for label, namespace in (
        ("a namespace without kokpit's bindings", "kube-public"),
        ("kokpit-system", "kokpit-system"),
        ("default (the guard's Events about RiskPolicies)", "default"),
        ("a namespace where its namespaced role is bound", USERS),
    ):
        listed = k.run("auth", "can-i", "--list", who, "-n", namespace)
        sections.append(f"# {label}\n{listed}")
    return "\n".join(sections)


def test_each_service_account_may_do_exactly_what_is_expected(k: Kubectl) -> None:
    done = kokpit(k, "install")
    assert done.returncode == 0, done.stderr
    for operator in OPERATORS:
        try:
            bind(k, operator, USERS)
        except KubectlError as e:
            if "already exists" not in e.stderr:
                raise
    differ = []
    for account in SERVICE_ACCOUNTS:
        actual = permissions(k, account)
        path = EXPECTED / f"{account}.txt"
        if WRITE_EXPECTED:
            path.parent.mkdir(exist_ok=True)
            path.write_text(actual)
        elif not path.exists() or path.read_text() != actual:
            differ.append(f"--- {path}\n{actual}")
    assert not WRITE_EXPECTED, f"wrote {EXPECTED}: read the lists, then run again without it"
    assert not differ, "permissions changed (a role grew or shrank):\n" + "\n".join(differ)


def test_uninstall_removes_kokpit_and_leaves_the_users_objects_and_the_crds(k: Kubectl) -> None:
    done = kokpit(k, "install")
    assert done.returncode == 0, done.stderr
    users = [
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "prod", "namespace": USERS},
            "spec": {"packageVersion": "k8s-1.36", "runtime": "kubernetes"},
        },
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": "host-1", "namespace": USERS},
            "spec": {
                "clusterRef": {"name": "prod"},
                "packageVersion": "node-1.36",
                "executor": "ssh",
                "address": "10.0.0.1",
                "sshSecretRef": {"name": "host-1-ssh"},
            },
        },
        # A Cluster someone keeps in kokpit-system: the namespace stays for it.
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "odd-place", "namespace": "kokpit-system"},
            "spec": {"packageVersion": "k8s-1.36", "runtime": "kubernetes"},
        },
    ]
    k.apply(users)
    try:
        bind(k, "machine", USERS)
    except KubectlError as e:
        if "already exists" not in e.stderr:
            raise
    # An object of one of kokpit's names that is not (or no longer) kokpit's is left alone.
    k.run("label", "clusterrole", "kokpit-guard-caller", "app.kubernetes.io/part-of-")

    done = kokpit(k, "uninstall")
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    assert "deleted Deployment kokpit-system/kokpit-machine-operator" in done.stdout
    assert "ClusterRole kokpit-guard-caller: not labelled" in done.stdout
    assert "10 CRDs, on purpose" in done.stdout
    assert f"RoleBinding {USERS}/kokpit-machine-operator" in done.stdout

    assert "Namespace kokpit-system: it holds 1 Cluster" in done.stdout
    assert "2 Clusters, 1 Machine" in done.stdout
    assert f"RoleBinding {USERS}/kokpit-machine-operator" in done.stdout

    left = installed(k)
    assert {key[0] for key in left} == {"CustomResourceDefinition", "Namespace"}
    assert len(left) == 11
    assert "deletionTimestamp" not in left["Namespace", "", "kokpit-system"]["metadata"]
    for namespace, name in ((USERS, "prod"), ("kokpit-system", "odd-place")):
        assert k.get("clusters.kokpit.io", name, "-n", namespace)["metadata"]["name"] == name
    assert k.get("machines.kokpit.io", "host-1", "-n", USERS)["metadata"]["name"] == "host-1"
    assert k.get("clusterrole", "kokpit-guard-caller")["metadata"]["name"] == "kokpit-guard-caller"
    for kind, name in (
        ("clusterrole", "kokpit-machine-operator"),
        ("clusterrole", "kokpit-machine-operator-namespaced"),
        ("serviceaccount", "kokpit-machine-operator"),
    ):
        with pytest.raises(KubectlError, match="NotFound"):
            k.run("get", kind, name, "-n", "kokpit-system")


def test_the_servicemonitor_component_scrapes_every_operators_metrics_service(
    assets: Assets, tmp_path: Path
) -> None:
    """Rendered only: no Prometheus Operator (nor its CRD) runs here."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    # kustomize takes relative paths only, as a user's overlay has them.
    default = os.path.relpath(CONFIG / "default", overlay)
    component = os.path.relpath(CONFIG / "components" / "servicemonitor", overlay)
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{default}]\ncomponents: [{component}]\n"
    )
    rendered = subprocess.run(
        [str(assets.bin("kubectl")), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    objects = list(yaml.safe_load_all(rendered))
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    services = [o for o in objects if o["kind"] == "Service"]
    spec = monitor["spec"]
    selected = [
        s
        for s in services
        if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        and all(e["key"] in s["metadata"]["labels"] for e in spec["selector"]["matchExpressions"])
        and s["metadata"]["namespace"] in spec["namespaceSelector"]["matchNames"]
    ]
    assert sorted(s["metadata"]["name"] for s in selected) == sorted(
        f"kokpit-{operator}-operator-metrics" for operator in OPERATORS
    )
    (endpoint,) = spec["endpoints"]
    for service in selected:
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_an_operator_serves_health_and_metrics_on_the_address_it_is_given(
    k: Kubectl, tmp_path: Path
) -> None:
    """The manifests run the operators with --health-bind-address=0.0.0.0 so that the kubelet
    and Prometheus reach them; before that flag the manager listened on 127.0.0.1 only."""
    install_crds(k)
    port = kwok_nodes.free_port()
    log = (tmp_path / "probe.log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "kokpit", "operator", "probe"),
            *("--kubeconfig", str(k.kubeconfig)),
            *("--health-bind-address", "127.0.0.2", "--health-port", str(port)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert process.poll() is None, (tmp_path / "probe.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "probe.log").read_text()
                time.sleep(0.5)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        process.terminate()
        process.wait(30)
        log.close()
