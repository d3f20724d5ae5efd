import pytest

from kokpit.controllers.cluster.phases import (
    DEFAULT_DEADLINE_S,
    SPEC_KEYS,
    applied_anything,
    deadline,
    plan_for,
)
from kokpit.controllers.cluster.skew import skew_error
from kokpit.local.components import Health
from kokpit.providers.controlplane import DEFAULT_PROBES, ComponentPlan, Probe
from kokpit.providers.controlplane.kubernetes import _readiness_probe


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (None, "v1.36.3", True),  # creation
        ("v1.35.4", "v1.36.3", True),  # one minor up
        ("v1.36.3", "v1.36.4", True),  # a patch
        ("v1.36.3", "v1.35.4", True),  # one minor back (a rollback)
        ("v1.35.4", "v1.37.2", False),  # skips a minor
        ("v1.37.2", "v1.35.4", False),  # two minors back
        ("v1.36.3", "v2.0.0", False),  # a major
    ],
)
def test_version_skew_policy(current: str | None, target: str, allowed: bool) -> None:
    assert (skew_error(current, target) is None) == allowed


def test_a_flag_or_image_change_is_a_different_plan() -> None:
    base = ComponentPlan("kube-apiserver", "v1.36.3")
    assert base.digest == ComponentPlan("kube-apiserver", "v1.36.3", {}).digest
    assert base.digest != ComponentPlan("kube-apiserver", "v1.36.3", {"v": "2"}).digest
    assert (
        base.digest != ComponentPlan("kube-apiserver", "v1.36.3", image="mirror/apiserver").digest
    )
    assert base.digest != ComponentPlan("kube-apiserver", "v1.36.4").digest


def package_with(checks: list[dict[str, object]]) -> dict[str, object]:
    component = {"version": "v1.36.3"}
    return {
        "spec": {
            "components": {key: component for key in SPEC_KEYS.values()},
            "healthChecks": checks,
        }
    }


def test_a_package_health_check_becomes_the_components_probe_and_deadline() -> None:
    package = package_with(
        [
            {
                "component": "kube-apiserver",
                "path": "/livez",
                "timeoutSeconds": 9,
                "deadlineSeconds": 40,
            }
        ]
    )
    plan = plan_for(package, "kube-apiserver")
    assert plan.health_probe == Probe("/livez", 9, 3)
    assert deadline(package, "kube-apiserver") == 40
    # Components without a check keep their defaults.
    assert plan_for(package, "etcd").health_probe == DEFAULT_PROBES["etcd"]
    assert deadline(package, "etcd") == DEFAULT_DEADLINE_S
    # A changed probe is a changed plan: the runtime must apply it.
    assert plan.digest != plan_for(package_with([]), "kube-apiserver").digest


def test_the_probe_reaches_the_process_health_url_and_the_pod_readiness_probe() -> None:
    health = Health("https://127.0.0.1:6443/readyz", tls="client-cert")
    assert health.probing("/livez", 9) == Health(
        "https://127.0.0.1:6443/livez", tls="client-cert", timeout_s=9
    )
    probe = _readiness_probe(ComponentPlan("kube-scheduler", "v1.36.3", probe=Probe("/livez", 7)))
    assert probe["httpGet"] == {"path": "/livez", "port": 10259, "scheme": "HTTPS"}
    assert probe["timeoutSeconds"] == 7


@pytest.mark.parametrize(
    ("status", "applied"),
    [
        ({}, False),  # new: nothing recorded, nothing made
        ({"phase": "Pending", "conditions": [{"type": "Ready"}]}, False),
        ({"step": {"component": "etcd"}}, True),  # recorded before it is made
        ({"packageVersion": "v1"}, True),
        ({"failedPackageVersion": "v2"}, True),
        ({"history": [{"packageVersion": "v1"}]}, True),
    ],
)
def test_only_a_status_without_steps_says_no_runtime_made_anything(
    status: dict[str, object], applied: bool
) -> None:
    assert applied_anything(status) == applied


def test_hosts_kubelets_may_bootstrap_and_only_kokpits_token_group_may() -> None:
    """The business cluster's RBAC for TLS bootstrap: kokpit's token group may ask for and get
    node client certificates approved, nodes may renew their own; nothing is granted to every
    bootstrapper, and no new ClusterRole is made for it."""
    from kokpit.controllers.cluster import access
    from kokpit.pki import nodeagent
    from kokpit.pki.bootstrap import GROUP

    bindings = {
        o["roleRef"]["name"]: [s["name"] for s in o["subjects"]]
        for o in access.rbac()
        if o["kind"] == "ClusterRoleBinding"
    }
    csr = "system:certificates.k8s.io:certificatesigningrequests"
    assert bindings["system:node-bootstrapper"] == [GROUP]
    assert bindings[f"{csr}:nodeclient"] == [GROUP]
    assert bindings[f"{csr}:selfnodeclient"] == ["system:nodes"]
    assert all("system:bootstrappers" not in subjects for subjects in bindings.values())
    roles = [o["metadata"]["name"] for o in access.rbac() if o["kind"] == "ClusterRole"]
    assert roles == [access.ROLE_NAME, nodeagent.ROLE_NAME]  # kokpit's, and the node agents'


def test_both_runtimes_enable_tls_bootstrap() -> None:
    from kokpit.providers.controlplane import ControlPlane
    from kokpit.providers.controlplane.kubernetes import _default_flags
    from kokpit.providers.controlplane.process import TLS_BOOTSTRAP_FLAGS

    cp = ControlPlane(
        namespace="ns",
        name="c",
        uid="u",
        pki={},
        service_cidr="10.96.0.0/12",
        pod_cidr="10.244.0.0/16",
        replicas=1,
        etcd_replicas=1,
    )
    for flags in (_default_flags(cp, "kube-apiserver"), TLS_BOOTSTRAP_FLAGS["kube-apiserver"]):
        assert flags["enable-bootstrap-token-auth"] == "true"
        assert flags["authorization-mode"] == "Node,RBAC"
        assert "NodeRestriction" in flags["enable-admission-plugins"]
    for flags in (
        _default_flags(cp, "kube-controller-manager"),
        TLS_BOOTSTRAP_FLAGS["kube-controller-manager"],
    ):
        assert flags["controllers"] == "*,bootstrapsigner,tokencleaner"
    cm = _default_flags(cp, "kube-controller-manager")
    assert cm["cluster-signing-cert-file"].endswith("ca.crt")
    assert cm["cluster-signing-key-file"].endswith("ca.key")
