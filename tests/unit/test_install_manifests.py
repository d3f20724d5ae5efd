"""What config/install.yaml (``kubectl kustomize config/default``, checked in) promises: each
operator a Deployment of two leader-electing replicas under its own ServiceAccount, with the
arguments ``kokpit operator`` accepts, probes on the port it serves, requests and limits, a
restrictive securityContext and no capability meant for demos; a PodDisruptionBudget and a
metrics Service that select exactly its pods; kokpit's labels on everything. That the file is
what config/ renders is checked where kubectl is (tests/e2e/test_install.py)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

import kokpit
from kokpit.cli import install
from kokpit.cli.main import parser
from kokpit.local import kokpit_image

CONFIG = Path(__file__).parents[2] / "config"
#: The operators config/default runs (the HTTPS guard is not among them: it needs a serving
#: certificate that nothing here issues).
OPERATORS = ("cluster", "machine", "remediation", "rollout", "probe")
HEALTH_PORT = 8081

Object = dict[str, Any]


@functools.cache
def _manifests() -> tuple[install.Manifest, ...]:
    return tuple(install.load(install.MANIFESTS))


def objects() -> list[Object]:
    return [copy.deepcopy(m.obj) for m in _manifests()]


def of_kind(kind: str) -> dict[str, Object]:
    return {o["metadata"]["name"]: o for o in objects() if o["kind"] == kind}


def test_every_generated_crd_is_in_the_crd_kustomization() -> None:
    listed = yaml.safe_load((CONFIG / "crd" / "kustomization.yaml").read_text())["resources"]
    generated = sorted(p.name for p in (CONFIG / "crd").glob("*.kokpit.io.yaml"))
    assert sorted(listed) == generated
    assert len(of_kind("CustomResourceDefinition")) == len(generated)


def test_the_image_tag_is_the_release() -> None:
    kustomization = yaml.safe_load((CONFIG / "default" / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert (image["name"], image["newTag"]) == (install.IMAGE, kokpit.__version__)
    for deployment in of_kind("Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"{install.IMAGE}:{kokpit.__version__}"


def test_the_local_overlay_names_the_image_make_image_builds() -> None:
    kustomization = yaml.safe_load((CONFIG / "local" / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    local = f"{image['newName']}:{image['newTag']}"
    assert image["name"] == install.IMAGE
    assert local == kokpit_image.image_name(kokpit.__version__)


def test_install_applies_the_crds_first_and_the_pods_after_their_rbac_and_network_policy() -> None:
    kinds = [m.resource.kind for m in _manifests()]
    first_non_crd = kinds.index("Namespace")
    assert set(kinds[:first_non_crd]) == {"CustomResourceDefinition"}
    assert "CustomResourceDefinition" not in kinds[first_non_crd:]
    last_rbac = max(i for i, k in enumerate(kinds) if k.endswith(("Role", "RoleBinding")))
    assert kinds.index("NetworkPolicy") < kinds.index("Deployment")
    assert last_rbac < kinds.index("Deployment")


def test_everything_carries_kokpits_labels_and_lives_in_kokpit_system() -> None:
    for obj in objects():
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        where = f"{obj['kind']} {meta['name']}"
        assert labels.get("app.kubernetes.io/name") == "kokpit", where
        assert labels.get("app.kubernetes.io/part-of") == "kokpit", where
        if obj["kind"] not in ("Namespace", "NetworkPolicy"):
            assert labels.get("app.kubernetes.io/component"), where
        # The guard's Events about RiskPolicies (which have no namespace) live in `default`.
        if "namespace" in meta and not meta["name"].startswith("kokpit-guard-client-events"):
            assert meta["namespace"] == "kokpit-system", where


def test_only_meta_cluster_objects_are_installed() -> None:
    """The node agents' role and policy belong in business clusters."""
    names = {o["metadata"]["name"] for o in objects()}
    assert "kokpit:node-agent" not in names
    assert "kokpit-node-fault-reports" not in names
    assert {"kokpit-node-condition-reports", "kokpit-remediation-operator-machines"} <= names


@pytest.mark.parametrize("operator", OPERATORS)
def test_each_operator_runs_as_two_replicas_that_elect_a_leader(operator: str) -> None:
    name = f"kokpit-{operator}-operator"
    deployment = of_kind("Deployment")[name]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == name
    assert name in of_kind("ServiceAccount")
    assert container["command"] == ["kokpit"]
    args = parser().parse_args(container["args"])
    assert args.operator == operator
    assert args.leader_elect
    assert args.namespace == "kokpit-system"
    assert (args.health_bind_address, args.health_port) == ("0.0.0.0", HEALTH_PORT)
    # Nothing that runs users' code on the operator's host, or plays hosts: demo-only.
    assert getattr(args, "runtimes", ("kubernetes",)) == ("kubernetes",)
    assert getattr(args, "executors", ("ssh",)) == ("ssh",)


@pytest.mark.parametrize("operator", OPERATORS)
def test_each_operator_is_probed_limited_and_locked_down(operator: str) -> None:
    pod = of_kind("Deployment")[f"kokpit-{operator}-operator"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", HEALTH_PORT)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "hostNetwork" not in pod
    assert "hostPID" not in pod


@pytest.mark.parametrize("operator", OPERATORS)
def test_its_budget_and_metrics_service_select_exactly_its_pods(operator: str) -> None:
    name = f"kokpit-{operator}-operator"
    deployment = of_kind("Deployment")[name]
    selector = deployment["spec"]["selector"]["matchLabels"]
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pods.items()
    assert selector["app.kubernetes.io/component"] == f"{operator}-operator"
    pdb = of_kind("PodDisruptionBudget")[name]
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    service = of_kind("Service")[f"{name}-metrics"]
    assert service["spec"]["selector"] == selector
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("metrics", HEALTH_PORT, "metrics")


def test_the_network_policy_admits_only_the_health_and_metrics_port() -> None:
    (policy,) = of_kind("NetworkPolicy").values()
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "kokpit"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": HEALTH_PORT}]}]
    assert spec["egress"] == [{}]


def test_another_image_replaces_kokpits_only() -> None:
    deployment: Object = {
        "kind": "Deployment",
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "a", "image": f"{install.IMAGE}:0.1.0"},
                        {"name": "b", "image": f"{install.IMAGE}-other:1"},
                        {"name": "c", "image": f"{install.IMAGE}@sha256:{'0' * 64}"},
                    ]
                }
            }
        },
    }
    containers = install.with_image(deployment, "registry.test/kokpit:dev")["spec"]["template"][
        "spec"
    ]["containers"]
    assert [c["image"] for c in containers] == [
        "registry.test/kokpit:dev",
        f"{install.IMAGE}-other:1",
        "registry.test/kokpit:dev",
    ]


@pytest.mark.parametrize("image", ["", "a b", "x;rm -rf /", "img\n", "a" * 300])
def test_an_image_that_is_no_reference_is_refused(
    image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["install", "--dry-run", "--image", image])
    assert "not an image reference" in capsys.readouterr().err


def test_a_kind_install_does_not_know_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "install.yaml"
    path.write_text("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: x\n")
    with pytest.raises(install.InstallError, match=r"holds a Job \(batch/v1\)"):
        install.load(path)


def test_dry_run_prints_the_manifests_with_the_image_asked_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        install.run_install(
            parser().parse_args(["install", "--dry-run", "--image", "registry.test/kokpit:dev"])
        )
        == 0
    )
    printed = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [(o["kind"], o["metadata"]["name"]) for o in printed] == [
        (o["kind"], o["metadata"]["name"]) for o in objects()
    ]
    images = {
        c["image"]
        for o in printed
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.test/kokpit:dev"}


def test_missing_manifests_say_where_they_come_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parser().parse_args(["install", "--dry-run", "--manifests", str(tmp_path / "none")])
    assert install.run_install(args) == 1
    err = capsys.readouterr().err
    assert "--manifests" in err
    assert "Traceback" not in err
