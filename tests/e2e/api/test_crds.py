"""The API server itself enforces kokpit's API: schema and CEL rules reject bad input with
messages a person understands, before any operator sees it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kokpit.local import Kubectl, KubectlError


def package(name: str, version: str = "v1.36.3") -> dict[str, Any]:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "ClusterPackageVersion",
        "metadata": {"name": name},
        "spec": {
            "kubernetesVersion": version,
            "components": {
                "etcd": {"version": "v3.6.8"},
                "kubeAPIServer": {"version": version, "flags": {"v": "2"}},
                "kubeControllerManager": {"version": version},
                "kubeScheduler": {"version": version},
            },
            "healthChecks": [{"component": "kube-apiserver", "path": "/readyz"}],
        },
    }


def cluster(namespace: str, name: str = "c1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"packageVersion": "p-1", **spec},
    }


def rejected(kubectl: Kubectl, obj: dict[str, Any]) -> str:
    with pytest.raises(KubectlError) as e:
        kubectl.run("create", "-f", "-", stdin=json.dumps(obj))
    return e.value.stderr


@pytest.mark.usefixtures("kokpit_crds")
def test_a_valid_cluster_gets_its_defaults(kubectl: Kubectl, namespace: str) -> None:
    kubectl.run("create", "-f", "-", stdin=json.dumps(cluster(namespace)))
    spec = kubectl.get("cluster", "-n", namespace, "c1")["spec"]
    assert spec["runtime"] == "kubernetes"
    assert spec["controlPlane"] == {"replicas": 1, "etcdReplicas": 1}
    assert spec["network"] == {"serviceCIDR": "10.96.0.0/12", "podCIDR": "10.244.0.0/16"}
    assert spec["paused"] is False
    table = kubectl.run("get", "kc", "-n", namespace)  # short name, printer columns
    assert table.split()[:6] == ["NAME", "VERSION", "PHASE", "READY", "AGE", "c1"]


@pytest.mark.usefixtures("kokpit_crds")
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"controlPlane": {"etcdReplicas": 2}},
            "spec.controlPlane.etcdReplicas: Invalid value: 2: etcdReplicas must be odd",
        ),
        ({"controlPlane": {"etcdReplicas": 9}}, "should be less than or equal to 7"),
        (
            {"network": {"serviceCIDR": "10.96.0.0/33"}},
            'spec.network.serviceCIDR: Invalid value: "10.96.0.0/33": must be a CIDR',
        ),
        (
            {"network": {"serviceCIDR": "10.96.0.0/12", "podCIDR": "10.100.0.0/16"}},
            "serviceCIDR and podCIDR must not overlap",
        ),
        ({"packageVersion": ""}, "spec.packageVersion: Invalid value"),
        ({"runtime": "docker"}, 'Unsupported value: "docker"'),
    ],
)
def test_bad_clusters_are_rejected_with_a_clear_message(
    kubectl: Kubectl, namespace: str, spec: dict[str, Any], message: str
) -> None:
    assert message in rejected(kubectl, cluster(namespace, **spec))


@pytest.mark.usefixtures("kokpit_crds")
def test_a_cluster_without_a_package_version_is_rejected(kubectl: Kubectl, namespace: str) -> None:
    obj = cluster(namespace)
    del obj["spec"]["packageVersion"]
    assert "spec.packageVersion: Required value" in rejected(kubectl, obj)


@pytest.mark.usefixtures("kokpit_crds")
def test_runtime_cannot_change(kubectl: Kubectl, namespace: str) -> None:
    kubectl.run("create", "-f", "-", stdin=json.dumps(cluster(namespace, runtime="process")))
    with pytest.raises(KubectlError, match="runtime cannot be changed after creation"):
        kubectl.run(
            "patch",
            "cluster",
            "-n",
            namespace,
            "c1",
            "--type=merge",
            "-p",
            '{"spec": {"runtime": "kubernetes"}}',
        )


@pytest.mark.usefixtures("kokpit_crds")
def test_package_versions_are_immutable_and_validated(kubectl: Kubectl) -> None:
    name = "p-immutable"
    kubectl.run("create", "-f", "-", stdin=json.dumps(package(name)))
    try:
        with pytest.raises(KubectlError, match="spec is immutable; create a new"):
            kubectl.run(
                "patch",
                "cpv",
                name,
                "--type=merge",
                "-p",
                '{"spec": {"kubernetesVersion": "v1.36.4"}}',
            )
        kubectl.run("label", "cpv", name, "tested=yes")  # metadata may change
    finally:
        kubectl.run("delete", "cpv", name)

    bad = copy.deepcopy(package("p-bad"))
    bad["spec"]["kubernetesVersion"] = "1.36"
    bad["spec"]["components"]["kubeAPIServer"]["flags"] = {"--v": "2"}
    message = rejected(kubectl, bad)
    assert "spec.kubernetesVersion" in message
    assert "flag names are written without leading dashes" in message


@pytest.mark.usefixtures("kokpit_crds")
def test_kubectl_explain_shows_the_field_docs(kubectl: Kubectl) -> None:
    text = kubectl.run("explain", "cluster.spec.controlPlane.etcdReplicas")
    assert "etcd needs a majority" in " ".join(text.split())
    text = kubectl.run("explain", "clusterpackageversion.spec.healthChecks.failureThreshold")
    assert "rolls back" in " ".join(text.split())


def script(version: str) -> dict[str, Any]:
    return {
        "script": {
            "check": {"run": "cat /etc/v 2>/dev/null || true"},
            "install": {"run": f"echo {version} > /etc/v"},
        }
    }


def machine_packages(name: str, *packages: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "MachinePackageVersion",
        "metadata": {"name": name},
        "spec": {"packages": list(packages)},
    }


def pkg(name: str, kind: str = "Other", install: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "version": "1.0",
        "install": script("1.0") if install is None else install,
    }


def machine(namespace: str, name: str = "m1", **spec: Any) -> dict[str, Any]:
    base = {
        "clusterRef": {"name": "c1"},
        "address": "127.0.0.2",
        "sshSecretRef": {"name": "s"},
        "packageVersion": "mpv-1",
    }
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {**base, **spec},
    }


@pytest.mark.usefixtures("kokpit_crds")
@pytest.mark.parametrize(
    ("packages", "message"),
    [
        ([pkg("a"), pkg("a")], 'spec.packages[1]: Duplicate value: {"name":"a"}'),
        ([pkg("a", install={})], "set exactly one of install.script"),
        (
            [pkg("a", install={"script": {"check": {"run": "true"}}})],
            "spec.packages[0].install.script.install: Required value",
        ),
        ([pkg("a", kind="Gizmo")], 'Unsupported value: "Gizmo"'),
        (
            [pkg("k1", kind="Kubelet"), pkg("k2", kind="Kubelet")],
            "at most one package may be the Kubelet",
        ),
        ([], "spec.packages: Invalid value"),
    ],
)
def test_bad_machine_package_versions_are_rejected(
    kubectl: Kubectl, packages: list[dict[str, Any]], message: str
) -> None:
    assert message in rejected(kubectl, machine_packages("mpv-bad", *packages))


@pytest.mark.usefixtures("kokpit_crds")
def test_machine_package_versions_are_immutable(kubectl: Kubectl) -> None:
    kubectl.run("create", "-f", "-", stdin=json.dumps(machine_packages("mpv-1", pkg("a"))))
    try:
        with pytest.raises(KubectlError, match="spec is immutable"):
            kubectl.run(
                "patch",
                "mpv",
                "mpv-1",
                "--type=json",
                "-p",
                '[{"op": "replace", "path": "/spec/packages/0/version", "value": "2"}]',
            )
    finally:
        kubectl.run("delete", "mpv", "mpv-1")


def gate(type_: str, namespace: str = "net-system", name: str = "net-operator") -> dict[str, Any]:
    return {"conditionType": type_, "reporter": {"namespace": namespace, "name": name}}


@pytest.mark.usefixtures("kokpit_crds")
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"address": "not an address!"}, "must be an IP address or a DNS name"),
        (
            {"readinessGates": [gate("net/Ready"), gate("net/Ready")]},
            "spec.readinessGates[1]: Duplicate value",
        ),
        (
            {"readinessGates": [{"conditionType": "net/Ready"}]},
            "spec.readinessGates[0].reporter: Required value",
        ),
        (
            {"readinessGates": [gate("MemoryPressure")]},
            "is a condition the kubelet owns",
        ),
        (
            {"readinessGates": [gate("net/Ready", namespace="a.b")]},
            "spec.readinessGates[0].reporter.namespace: Invalid value",
        ),
        (
            {"readinessGates": [gate("net/Ready", name="Net_Operator")]},
            "spec.readinessGates[0].reporter.name: Invalid value",
        ),
        ({"taints": [{"key": "a", "effect": "Sometimes"}]}, 'Unsupported value: "Sometimes"'),
        ({"port": 0}, "spec.port: Invalid value: 0"),
    ],
)
def test_bad_machines_are_rejected(
    kubectl: Kubectl, namespace: str, spec: dict[str, Any], message: str
) -> None:
    assert message in rejected(kubectl, machine(namespace, **spec))


@pytest.mark.usefixtures("kokpit_crds")
def test_a_valid_machine_gets_its_defaults(kubectl: Kubectl, namespace: str) -> None:
    gates = [{**gate("net/Ready"), "mode": "Bootstrap"}, gate("disk/Ready")]
    kubectl.run("create", "-f", "-", stdin=json.dumps(machine(namespace, readinessGates=gates)))
    spec = kubectl.get("machine", "-n", namespace, "m1")["spec"]
    assert (spec["port"], spec["executor"]) == (22, "ssh")
    assert [g["mode"] for g in spec["readinessGates"]] == ["Bootstrap", "Continuous"]


# -- input that would make invalid derived objects ------------------------------------------
# A Cluster's name begins its Services' and StatefulSet's names, its CIDRs become component
# flags, a Machine's name becomes a Node, its labels and taints go onto the Node: each is
# refused here, at the field that must change, with why.


def accepted(kubectl: Kubectl, obj: dict[str, Any]) -> None:
    """The API server accepts ``obj``: every schema and CEL rule runs, nothing is stored."""
    kubectl.run("create", "--dry-run=server", "-f", "-", stdin=json.dumps(obj))


def refused(kubectl: Kubectl, obj: dict[str, Any], path: str, message: str) -> None:
    """The API server refuses ``obj`` on one line naming the field and saying ``message``."""
    stderr = rejected(kubectl, obj)
    lines = [line for line in stderr.splitlines() if f"{path}: " in line]
    assert any(message in line for line in lines), stderr


CLUSTER_NAME_TOO_LONG = (
    "a Cluster's name must be at most 47 characters: the objects of its control plane are "
    "named after it, and <name>-etcd, the etcd StatefulSet, may be at most 52 characters"
)
CLUSTER_NAME_NOT_DNS1035 = (
    "a Cluster's name must start with a lower-case letter and hold only lower-case letters, "
    "digits and '-' (no '.'): it begins the names of the control plane's Services"
)
HOST_BITS = "must be a range's network address, with no host bits set (10.96.0.0/12, not"


@pytest.mark.usefixtures("kokpit_crds")
@pytest.mark.parametrize(
    ("name", "spec", "path", "message"),
    [
        ("c" * 48, {}, "metadata.name", CLUSTER_NAME_TOO_LONG),
        ("1c", {}, "metadata.name", CLUSTER_NAME_NOT_DNS1035),
        ("c.example", {}, "metadata.name", CLUSTER_NAME_NOT_DNS1035),
        (
            "c1",
            {"packageVersion": "P_1"},
            "spec.packageVersion",
            "must be the name of a ClusterPackageVersion: lower-case letters",
        ),
        ("c1", {"network": {"serviceCIDR": "10.96.0.1/12"}}, "spec.network.serviceCIDR", HOST_BITS),
        ("c1", {"network": {"podCIDR": "10.244.1.0/16"}}, "spec.network.podCIDR", HOST_BITS),
        (
            "c1",
            {"network": {"serviceCIDR": "10.96.0.0/31"}},
            "spec.network.serviceCIDR",
            "an IPv4 serviceCIDR must be /30 or wider: without its network and broadcast "
            "addresses a /31 or /32 holds no Service IPs",
        ),
        (
            "c1",
            {"network": {"serviceCIDR": "10.96.0.0/32"}},
            "spec.network.serviceCIDR",
            "an IPv4 serviceCIDR must be /30 or wider",
        ),
        (
            "c1",
            {"network": {"serviceCIDR": "fd00::/63"}},
            "spec.network.serviceCIDR",
            "an IPv6 serviceCIDR must be between /64 (the widest kube-apiserver accepts) and /126",
        ),
        (
            "c1",
            {"network": {"serviceCIDR": "fd00::/127"}},
            "spec.network.serviceCIDR",
            "an IPv6 serviceCIDR must be between /64",
        ),
        (
            "c1",
            {"network": {"podCIDR": "10.244.0.0/25"}},
            "spec.network.podCIDR",
            "an IPv4 podCIDR must be /24 or wider: kube-controller-manager gives each node a /24",
        ),
        (
            "c1",
            {"network": {"podCIDR": "fd01::/47"}},
            "spec.network.podCIDR",
            "an IPv6 podCIDR must be between /48 and /64",
        ),
        (
            "c1",
            {"network": {"podCIDR": "fd01::/65"}},
            "spec.network.podCIDR",
            "an IPv6 podCIDR must be between /48 and /64",
        ),
    ],
)
def test_a_cluster_that_would_make_invalid_objects_is_refused_saying_why(
    kubectl: Kubectl, namespace: str, name: str, spec: dict[str, Any], path: str, message: str
) -> None:
    refused(kubectl, cluster(namespace, name, **spec), path, message)


@pytest.mark.usefixtures("kokpit_crds")
@pytest.mark.parametrize(
    ("name", "network"),
    [
        ("c" * 47, {}),  # the longest name
        ("c", {"serviceCIDR": "10.96.0.0/30", "podCIDR": "10.244.0.0/24"}),  # the narrowest
        ("c-1", {"serviceCIDR": "10.0.0.0/8", "podCIDR": "172.16.0.0/12"}),
        ("c1", {"serviceCIDR": "fd00::/64", "podCIDR": "fd01::/48"}),
        ("c1", {"serviceCIDR": "fd00::/126", "podCIDR": "fd01::/64"}),
    ],
)
def test_clusters_at_the_limits_are_accepted(
    kubectl: Kubectl, namespace: str, name: str, network: dict[str, str]
) -> None:
    accepted(kubectl, cluster(namespace, name, network=network))


LABEL_KEY = "is invalid: it must be a qualified name such as example.com/rack"
LABEL_VALUE = "a label value must be at most 63 letters, digits, '-', '_' and '.'"


@pytest.mark.usefixtures("kokpit_crds")
@pytest.mark.parametrize(
    ("name", "spec", "path", "message"),
    [
        (
            "m" * 64,
            {},
            "metadata.name",
            "a Machine's name must be at most 63 characters: it becomes its Node's name and the "
            "value of the Node's kubernetes.io/hostname label",
        ),
        (
            "m1",
            {"nodeLabels": {"rack": "r1", "bad key": "x"}},
            "spec.nodeLabels",
            f'label key "bad key" {LABEL_KEY}',
        ),
        ("m1", {"nodeLabels": {"r" * 64: ""}}, "spec.nodeLabels", f'"{"r" * 64}" {LABEL_KEY}'),
        ("m1", {"nodeLabels": {"x/" + "r" * 64: ""}}, "spec.nodeLabels", LABEL_KEY),
        ("m1", {"nodeLabels": {"e" * 254 + "/r": ""}}, "spec.nodeLabels", LABEL_KEY),
        ("m1", {"nodeLabels": {"Example.com/r": ""}}, "spec.nodeLabels", LABEL_KEY),
        ("m1", {"nodeLabels": {"rack": "-r1"}}, "spec.nodeLabels[rack]", LABEL_VALUE),
        (
            "m1",
            {"nodeLabels": {"rack": "r" * 64}},
            "spec.nodeLabels.rack",
            "Too long: may not be more than 63",
        ),
        (
            "m1",
            {"taints": [{"key": "bad key", "effect": "NoSchedule"}]},
            "spec.taints[0].key",
            "a taint key must be a qualified name",
        ),
        (
            "m1",
            {"taints": [{"key": "k", "value": "a b", "effect": "NoSchedule"}]},
            "spec.taints[0].value",
            "a taint value must be at most 63 letters, digits",
        ),
        (
            "m1",
            {"clusterRef": {"name": "C1"}},
            "spec.clusterRef.name",
            "must be an object's name: lower-case letters",
        ),
        ("m1", {"address": "node..example.com"}, "spec.address", "must be an IP address or a"),
        (
            "m1",
            {"packageVersion": "mpv 1"},
            "spec.packageVersion",
            "must be an object's name: lower-case letters",
        ),
    ],
)
def test_a_machine_that_would_make_an_invalid_node_is_refused_saying_why(
    kubectl: Kubectl, namespace: str, name: str, spec: dict[str, Any], path: str, message: str
) -> None:
    refused(kubectl, machine(namespace, name, **spec), path, message)


@pytest.mark.usefixtures("kokpit_crds")
def test_machines_at_the_limits_are_accepted(kubectl: Kubectl, namespace: str) -> None:
    labels = {
        "e" * 253 + "/" + "r" * 63: "v" * 63,
        "r" * 63: "",
        "node-role.kubernetes.io/worker": "",
        "example.com/rack": "R_1.a-2",
    }
    taints = [
        {"key": "e" * 253 + "/" + "t" * 63, "value": "v" * 63, "effect": "NoExecute"},
        {"key": "dedicated", "effect": "NoSchedule"},
    ]
    accepted(kubectl, machine(namespace, "m" * 63, nodeLabels=labels, taints=taints))
    # A dotted hostname is a Node name; an address is an IP (either family) or a DNS name.
    accepted(kubectl, machine(namespace, "node-1.example.com", address="node-1.example.com"))
    accepted(kubectl, machine(namespace, address="fd00::1"))
    many = {f"example.com/l{i}": "v" for i in range(64)}
    accepted(kubectl, machine(namespace, nodeLabels=many))
    assert "spec.nodeLabels: Too many" in rejected(
        kubectl, machine(namespace, nodeLabels={**many, "one-more": ""})
    )


def binary(**fields: str) -> dict[str, Any]:
    return {
        "binary": {"url": "https://example.com/tool", "sha256": "a" * 64, "path": "/t", **fields}
    }


#: Values that would be shell text if spliced into a script; each must be refused.
HOSTILE = ["$(touch /tmp/pwned)", "`touch /tmp/pwned`", "a'b", 'a"b', "a b", "a\nb"]


@pytest.mark.usefixtures("kokpit_crds")
@pytest.mark.parametrize(
    ("package", "message"),
    [
        *(
            ({**pkg("a"), "version": v}, "must be printable ASCII without spaces or newlines")
            for v in ["1.0\n", "1.0 ", " 1.0", "1 0", "1.0\t"]
        ),
        *(
            (pkg("a", install={"apt": {"package": p}}), "must be a Debian package name")
            for p in ["-o=APT::Get::Trivial-Only=true", "--help", "Containerd", *HOSTILE]
        ),
        (
            pkg("a", install={"apt": {"package": "containerd", "version": "1.0 -y"}}),
            "must be a Debian version",
        ),
        *(
            (pkg("a", install=binary(path=p)), "must be an absolute file path")
            for p in [
                "relative/tool",
                "/usr/bin/../../etc/passwd",
                "/usr/./bin",
                "/usr/bin/",
                "//usr/bin",
                "/opt/my tool",
                "/opt/-x\nKOKPIT_UNIT",
                *("/opt/" + h for h in HOSTILE),
            ]
        ),
        *(
            (pkg("a", install=binary(url=u)), "must be an http:// or https:// URL")
            for u in [
                "file:///etc/shadow",
                "-K/etc/passwd",
                "https://example.com/a b",
                "https://example.com/{a,b}",
                *("https://example.com/" + h for h in HOSTILE),
            ]
        ),
        (
            pkg("a", install=binary(systemdUnit="[Service]\nExecStart=/t\u0000")),
            "must not contain NUL characters",
        ),
    ],
)
def test_values_that_reach_a_host_are_refused_unless_well_formed(
    kubectl: Kubectl, package: dict[str, Any], message: str
) -> None:
    assert message in rejected(kubectl, machine_packages("mpv-hostile", package))


@pytest.mark.usefixtures("kokpit_crds")
def test_well_formed_host_values_are_accepted(kubectl: Kubectl) -> None:
    tool = {
        **pkg("tool"),
        "version": "1.7.2-1+b1~rc1",
        "config": {"sandbox-image": "pause:3.10", "Log.Level": "debug", "x_y": "z"},
        "install": binary(
            url="https://example.com/v1.7.2/tool?sig=a%2Bb&x=(1)#frag",
            path="/usr/local/bin/.tool-1.7.2+b1",
            systemdUnit="[Service]\nExecStart=/usr/local/bin/tool $ARGS\n",
        ),
    }
    apt = pkg(
        "containerd", install={"apt": {"package": "containerd.io", "version": "1:1.6.20~ds1-1"}}
    )
    obj = machine_packages("mpv-well-formed", tool, apt)
    kubectl.run("create", "-f", "-", stdin=json.dumps(obj))
    kubectl.run("delete", "mpv", "mpv-well-formed")
