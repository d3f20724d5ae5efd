"""kokpit's Helm chart (charts/kokpit) with a real helm (v3.22.0, built from its Go module by
kokpit/local/helm.py) on a real control plane with KWOK nodes. The KWOK nodes play the
operators' pods, which become Ready without running anything (no image is pulled): what the
operators do is not under test here, only what the chart puts into the cluster and keeps.

The module runs a meta-cluster of its own (it installs and uninstalls CRDs and cluster-wide
roles that other modules rely on) and its tests run in file order: lint and template, install
the previous chart version, upgrade, turn an operator off and on, uninstall and install again,
then Helm taking over an install that ``kokpit install`` made.

There is no released previous chart. The "previous version" here is the chart the generator
(kokpit/cli/chart.py) writes from today's manifests with an older chart version and appVersion
(so an older image tag) and one CRD changed (the Clusters' ``Endpoint`` column missing). The
upgrade from it proves that an upgrade keeps every object (the same uids, the users' objects
untouched), rolls the Deployments to the new image and delivers a changed CRD (which a chart
with its CRDs in ``crds/`` would not). It does not prove an upgrade across a change of the
objects' names or kinds, which no version of kokpit has made yet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import kokpit
from kokpit.cli import chart, install
from kokpit.local import Assets, Kubectl, KubectlError, LocalCluster
from kokpit.local import helm as helm_build
from kokpit.local import nodes as kwok_nodes

RELEASE = "kokpit"
NAMESPACE = "kokpit-system"
USERS = "fleet"
OPERATORS = ("cluster", "machine", "remediation", "rollout", "probe")
PREVIOUS = "0.0.9"
#: What `kubectl get` lists to see every kind the chart holds.
KINDS = ",".join(f"{r.plural}.{r.group}" if r.group else r.plural for r in install.ORDER)
#: What Helm adds to the manifests' objects: its labels, and the CRDs' keep policy.
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance")

Object = dict[str, Any]
Key = tuple[str, str, str]


@pytest.fixture(scope="module")
def helm_binary() -> Path:
    return helm_build.ensure(progress=lambda _: None)


@pytest.fixture(scope="module")
def meta(assets: Assets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("helm-meta"))
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


@pytest.fixture(scope="module")
def run_helm(
    helm_binary: Path, meta: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """``helm ARGS`` against the module's meta-cluster, with a home of its own."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(meta.kubeconfig),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(helm_binary), *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        if check:
            assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
        return done

    return run


CLUSTERS = "clusters.kokpit.io"
ENDPOINT = "Endpoint"


@pytest.fixture(scope="module")
def previous_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart as the generator writes it for release :data:`PREVIOUS` (its version and
    appVersion, so the operators' image tag), from manifests whose Clusters CRD lacked the
    Endpoint column."""
    objects = [o for o in yaml.safe_load_all(install.MANIFESTS.read_text()) if o]
    for obj in objects:
        if obj["kind"] == "CustomResourceDefinition" and obj["metadata"]["name"] == CLUSTERS:
            for version in obj["spec"]["versions"]:
                columns = version.get("additionalPrinterColumns", [])
                version["additionalPrinterColumns"] = [c for c in columns if c["name"] != ENDPOINT]
    files = chart.render(
        yaml.safe_dump_all(objects, sort_keys=False),
        chart.SERVICE_MONITOR.read_text(),
        version=PREVIOUS,
    )
    root = tmp_path_factory.mktemp("previous") / "kokpit"
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def endpoint_columns_in(crd: Object) -> set[str]:
    """The versions of ``crd`` that show the Endpoint column."""
    return {
        v["name"]
        for v in crd["spec"]["versions"]
        if ENDPOINT in {c["name"] for c in v.get("additionalPrinterColumns", [])}
    }


def endpoint_columns(k: Kubectl) -> set[str]:
    return endpoint_columns_in(k.get("crd", CLUSTERS))


def objects_of(text: str) -> list[Object]:
    return [o for o in yaml.safe_load_all(text) if o]


def key(obj: Object) -> Key:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def without_helm(obj: Object) -> Object:
    """``obj`` without what Helm adds to the manifests' objects."""
    meta = obj["metadata"]
    meta["labels"] = {k: v for k, v in meta.get("labels", {}).items() if k not in HELM_LABELS}
    annotations = {k: v for k, v in meta.get("annotations", {}).items() if (k, v) != chart.KEEP}
    meta.pop("annotations", None)
    if annotations:
        meta["annotations"] = annotations
    return obj


def manifests() -> dict[Key, Object]:
    """config/install.yaml's objects but the Namespace (helm --create-namespace makes it)."""
    return {
        key(o): o for o in objects_of(install.MANIFESTS.read_text()) if o["kind"] != "Namespace"
    }


def installed(k: Kubectl) -> dict[Key, Object]:
    """Every object of the chart's kinds that carries kokpit's label."""
    items = k.get(KINDS, "-A", "-l", "app.kubernetes.io/part-of=kokpit")["items"]
    return {key(o): o for o in items if o["kind"] != "Namespace"}


def uids(objects: dict[Key, Object]) -> dict[Key, str]:
    return {key: o["metadata"]["uid"] for key, o in objects.items()}


def of_operator(operator: str) -> set[Key]:
    component = f"{operator}-operator"
    return {
        key
        for key, o in manifests().items()
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    }


def subjects(k: Kubectl, kind: str, name: str, *namespace: str) -> set[str]:
    return {s["name"] for s in k.get(kind, name, *namespace)["subjects"]}


def users_objects() -> list[Object]:
    """What users make between an install and an upgrade: a Cluster, a Machine of it with its
    SSH Secret, and the RoleBinding that lets the Machine-Operator act in their namespace."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "host-1-ssh", "namespace": USERS},
            "stringData": {"note": "not a real key"},
        },
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
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "kokpit-machine-operator", "namespace": USERS},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "kokpit-machine-operator-namespaced",
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": "kokpit-machine-operator",
                    "namespace": NAMESPACE,
                }
            ],
        },
    ]


USERS_KINDS = "secrets,clusters.kokpit.io,machines.kokpit.io,rolebindings"


def users_state(k: Kubectl) -> dict[Key, tuple[str, object]]:
    """The users' objects by uid and spec (or what a Secret and a RoleBinding hold)."""
    items = k.get(USERS_KINDS, "-n", USERS)["items"]
    return {
        key(o): (
            o["metadata"]["uid"],
            o.get("spec") or o.get("data") or (o.get("roleRef"), o.get("subjects")),
        )
        for o in items
        if o["metadata"]["name"] in ("host-1-ssh", "prod", "host-1", "kokpit-machine-operator")
    }


def images(k: Kubectl) -> set[str]:
    return {
        c["image"]
        for d in k.get("deployments", "-n", NAMESPACE)["items"]
        for c in d["spec"]["template"]["spec"]["containers"]
    }


def wait_ready(k: Kubectl, operators: tuple[str, ...], timeout: float = 120.0) -> None:
    """Until exactly ``operators`` have Deployments, each with both replicas Ready."""
    deadline = time.monotonic() + timeout
    want = {f"kokpit-{o}-operator" for o in operators}
    while True:
        ready = {
            d["metadata"]["name"]: (d.get("status") or {}).get("readyReplicas", 0)
            for d in k.get("deployments", "-n", NAMESPACE)["items"]
        }
        if set(ready) == want and all(n == 2 for n in ready.values()):
            return
        assert time.monotonic() < deadline, f"Deployments not ready: {ready}"
        time.sleep(1)


# -- without a cluster -----------------------------------------------------------------------


def test_helm_lint_passes_strictly(run_helm: Any) -> None:
    done = run_helm("lint", str(chart.CHART), "--strict", "--namespace", NAMESPACE)
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_template_with_the_default_values_renders_the_manifests(run_helm: Any) -> None:
    """The chart and config/install.yaml cannot drift: the same objects, field for field,
    once Helm's labels and the CRDs' keep policy are set aside."""
    rendered = run_helm("template", RELEASE, str(chart.CHART), "--namespace", NAMESPACE).stdout
    objects = objects_of(rendered)
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    assert crds
    assert all(c["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"} for c in crds)
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", key(obj)
    by_key = {key(o): without_helm(o) for o in objects}
    want = manifests()
    assert set(by_key) == set(want)
    differ = [k for k in want if by_key[k] != want[k]]
    assert not differ, f"the chart renders these differently from config/install.yaml: {differ}"


def test_template_with_values(run_helm: Any) -> None:
    done = run_helm(
        *("template", RELEASE, str(chart.CHART), "--namespace", NAMESPACE),
        *("--set", "operators.machine.enabled=false", "--set", "operators.cluster.replicas=1"),
        *("--set", "operators.cluster.runtimes={kubernetes,process}"),
        *("--set", "image.repository=registry.test/kokpit", "--set", "image.tag=dev"),
        *("--set", "image.pullPolicy=Always", "--set", "resources.limits.memory=2Gi"),
        *("--set", "operators.probe.resources.requests.cpu=50m"),
        *("--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.release=prom"),
    )
    objects = {key(o): o for o in objects_of(done.stdout)}
    assert not of_operator("machine") & set(objects)
    assert ("PodDisruptionBudget", NAMESPACE, "kokpit-cluster-operator") not in objects
    assert ("PodDisruptionBudget", NAMESPACE, "kokpit-probe-operator") in objects
    for binding in (
        ("ClusterRoleBinding", "", "kokpit-guard-client"),
        ("RoleBinding", "default", "kokpit-guard-client-events"),
    ):
        names = {s["name"] for s in objects[binding]["subjects"]}
        assert "kokpit-machine-operator" not in names
        assert "kokpit-cluster-operator" in names
    deployments = {n: o for (kind, _, n), o in objects.items() if kind == "Deployment"}
    assert len(deployments) == 4
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        (container,) = spec["template"]["spec"]["containers"]
        assert container["image"] == "registry.test/kokpit:dev"
        assert container["imagePullPolicy"] == "Always"
        assert spec["replicas"] == (1 if name == "kokpit-cluster-operator" else 2)
        requests = container["resources"]["requests"]
        if name == "kokpit-probe-operator":
            assert container["resources"] == {"requests": {"cpu": "50m"}}
        else:
            assert container["resources"]["limits"]["memory"] == "2Gi"
            assert requests == {"cpu": "100m", "memory": "256Mi"}
    assert (
        "--runtimes=kubernetes,process"
        in (
            deployments["kokpit-cluster-operator"]["spec"]["template"]["spec"]["containers"][0][
                "args"
            ]
        )
    )
    (monitor,) = [o for o in objects.values() if o["kind"] == "ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]
    services = [o for o in objects.values() if o["kind"] == "Service"]
    assert len(services) == 4
    for service in services:
        labels = service["metadata"]["labels"]
        assert selector["matchLabels"].items() <= labels.items()
        assert all(e["key"] in labels for e in selector["matchExpressions"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--set", "operators.cluster.runtimes={docker}"), "value must be one of"),
        (("--set", "operators.clustr.enabled=false"), "additional properties 'clustr'"),
        (("--set", "image.tag=a b"), "does not match pattern"),
        (("--set", "replicas=0"), "minimum"),
        (("--namespace", "default"), "installs into the namespace kokpit-system only"),
    ],
)
def test_values_kokpit_cannot_run_with_are_refused(
    run_helm: Any, flags: tuple[str, ...], message: str
) -> None:
    namespace = () if "--namespace" in flags else ("--namespace", NAMESPACE)
    done = run_helm("template", RELEASE, str(chart.CHART), *namespace, *flags, check=False)
    assert done.returncode != 0
    assert message in done.stderr


# -- on the meta-cluster ---------------------------------------------------------------------


def test_install_the_previous_version(k: Kubectl, run_helm: Any, previous_chart: Path) -> None:
    run_helm(
        *("install", RELEASE, str(previous_chart), "--namespace", NAMESPACE),
        *("--create-namespace", "--wait", "--timeout", "120s"),
    )
    assert set(installed(k)) == set(manifests())
    assert images(k) == {f"{install.IMAGE}:{PREVIOUS}"}
    assert endpoint_columns(k) == set()
    wait_ready(k, OPERATORS)


def test_upgrade_keeps_every_object_and_delivers_the_changed_crd(k: Kubectl, run_helm: Any) -> None:
    k.apply(users_objects())
    users = users_state(k)
    assert len(users) == 4
    before = uids(installed(k))

    run_helm(
        *("upgrade", RELEASE, str(chart.CHART), "--namespace", NAMESPACE),
        *("--wait", "--timeout", "120s"),
    )
    after = installed(k)
    assert uids(after) == before
    assert images(k) == {f"{install.IMAGE}:{kokpit.__version__}"}
    want = endpoint_columns_in(manifests()[("CustomResourceDefinition", "", CLUSTERS)])
    assert want
    assert endpoint_columns(k) == want
    assert users_state(k) == users
    wait_ready(k, OPERATORS)
    history = yaml.safe_load(
        run_helm("history", RELEASE, "--namespace", NAMESPACE, "-o", "yaml").stdout
    )
    assert [(r["revision"], r["chart"]) for r in history] == [
        (1, f"kokpit-{PREVIOUS}"),
        (2, f"kokpit-{kokpit.__version__}"),
    ]


def test_an_operator_turned_off_and_on_through_the_values(k: Kubectl, run_helm: Any) -> None:
    users = users_state(k)
    before = uids(installed(k))
    machine = of_operator("machine")
    assert ("Deployment", NAMESPACE, "kokpit-machine-operator") in machine
    assert ("ServiceAccount", NAMESPACE, "kokpit-machine-operator") in machine
    assert ("ClusterRole", "", "kokpit-machine-operator-namespaced") in machine

    run_helm(
        *("upgrade", RELEASE, str(chart.CHART), "--namespace", NAMESPACE, "--reuse-values"),
        *("--set", "operators.machine.enabled=false", "--wait", "--timeout", "120s"),
    )
    off = installed(k)
    assert set(off) == set(manifests()) - machine
    assert uids(off) == {key: uid for key, uid in before.items() if key not in machine}
    for binding in (
        ("clusterrolebinding", "kokpit-guard-client"),
        ("rolebinding", "kokpit-guard-client-events", "-n", "default"),
    ):
        assert "kokpit-machine-operator" not in subjects(k, *binding)
        assert "kokpit-cluster-operator" in subjects(k, *binding)
    assert users_state(k) == users
    wait_ready(k, tuple(o for o in OPERATORS if o != "machine"))

    run_helm(
        *("upgrade", RELEASE, str(chart.CHART), "--namespace", NAMESPACE, "--reuse-values"),
        *("--set", "operators.machine.enabled=true", "--wait", "--timeout", "120s"),
    )
    on = installed(k)
    assert set(on) == set(manifests())
    for key in set(on) - machine:
        assert on[key]["metadata"]["uid"] == before[key], key
    assert "kokpit-machine-operator" in subjects(k, "clusterrolebinding", "kokpit-guard-client")
    assert users_state(k) == users
    wait_ready(k, OPERATORS)


def test_uninstall_leaves_the_crds_the_users_objects_and_the_namespace(
    k: Kubectl, run_helm: Any
) -> None:
    users = users_state(k)
    crds = {
        key: o["metadata"]["uid"] for key, o in installed(k).items() if key[0].startswith("Custom")
    }
    assert len(crds) == sum(key[0] == "CustomResourceDefinition" for key in manifests())

    done = run_helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")
    assert "kept due to the resource policy" in done.stdout + done.stderr
    left = installed(k)
    assert uids(left) == crds
    assert users_state(k) == users
    assert k.get("namespace", NAMESPACE)["status"]["phase"] == "Active"
    with pytest.raises(KubectlError, match="NotFound"):
        k.run("get", "serviceaccount", "kokpit-machine-operator", "-n", NAMESPACE)

    # Installed again, the release takes the kept CRDs back as they are.
    run_helm(
        *("install", RELEASE, str(chart.CHART), "--namespace", NAMESPACE),
        *("--wait", "--timeout", "120s"),
    )
    again = installed(k)
    assert set(again) == set(manifests())
    assert {key: o["metadata"]["uid"] for key, o in again.items() if key in crds} == crds
    assert users_state(k) == users


def test_helm_takes_over_an_install_made_by_kokpit_install(k: Kubectl, run_helm: Any) -> None:
    """Moving from ``kokpit install`` (or ``kubectl apply -k``) to Helm: helm refuses objects
    it did not make unless told to take them, and then takes every one as it is."""
    run_helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")
    done = subprocess.run(
        [sys.executable, "-m", "kokpit", "install", "--kubeconfig", str(k.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    before = uids(installed(k))
    assert set(before) == set(manifests())

    install_again = ("install", RELEASE, str(chart.CHART), "--namespace", NAMESPACE)
    refused = run_helm(*install_again, check=False)
    assert refused.returncode != 0
    assert "invalid ownership metadata" in refused.stderr
    assert uids(installed(k)) == before

    run_helm(*install_again, "--take-ownership", "--wait", "--timeout", "120s")
    after = installed(k)
    assert uids(after) == before
    for key, obj in after.items():
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", key
    wait_ready(k, OPERATORS)
