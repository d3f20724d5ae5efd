"""charts/kokpit is generated from config/install.yaml (kokpit/cli/chart.py): it must be what
the generator writes today, its values' defaults must be the manifests', and what the values
accept must be what ``kokpit operator`` accepts. That ``helm template`` renders the manifests'
objects is checked where helm is (tests/e2e/test_helm.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import kokpit
from kokpit.cli import chart, install
from kokpit.cli.main import parser


def test_the_chart_is_what_make_generate_writes() -> None:
    assert chart.stale() == [], "charts/kokpit is stale: run `make generate`"


def test_a_changed_or_extra_file_is_stale(tmp_path: Path) -> None:
    copy = tmp_path / "kokpit"
    for path, text in chart.current().items():
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        (copy / path).write_text(text)
    assert chart.stale(copy) == []
    values = copy / "values.yaml"
    values.write_text(values.read_text().replace("replicas: 2", "replicas: 3"))
    (copy / "templates" / "extra.yaml").write_text("kind: ConfigMap\n")
    assert chart.stale(copy) == ["templates/extra.yaml", "values.yaml"]


def test_check_says_what_is_stale(capsys: pytest.CaptureFixture[str]) -> None:
    assert chart.main(["--check"]) == 0
    assert capsys.readouterr().err == ""


def test_the_values_default_to_what_the_manifests_run() -> None:
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    deployments = [
        m.obj for m in install.load(install.MANIFESTS) if m.resource.kind == "Deployment"
    ]
    (container,) = deployments[0]["spec"]["template"]["spec"]["containers"]
    assert values["image"] == {"repository": install.IMAGE, "tag": "", "pullPolicy": ""}
    assert values["replicas"] == deployments[0]["spec"]["replicas"] == 2
    assert values["resources"] == container["resources"]
    assert set(values["operators"]) == {"cluster", "machine", "remediation", "rollout", "probe"}
    assert all(op["enabled"] for op in values["operators"].values())
    assert values["operators"]["cluster"]["runtimes"] == ["kubernetes"]
    assert values["operators"]["machine"]["executors"] == ["ssh"]
    assert values["operators"]["remediation"]["executors"] == ["ssh"]
    assert values["serviceMonitor"] == {"enabled": False, "interval": "30s", "labels": {}}
    meta = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())
    assert meta["version"] == meta["appVersion"] == kokpit.__version__


@pytest.mark.parametrize(("operator", "flag"), [("cluster", "runtimes"), ("machine", "executors")])
def test_the_schema_admits_exactly_the_names_the_operator_accepts(
    operator: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    names = schema["properties"]["operators"]["properties"][operator]["properties"][flag]
    for name in names["items"]["enum"]:
        args = parser().parse_args(["operator", operator, f"--{flag}={name}"])
        assert getattr(args, flag) == (name,)
    with pytest.raises(SystemExit):
        parser().parse_args(["operator", operator, f"--{flag}=nonesuch"])
    capsys.readouterr()


def test_every_crd_is_kept_by_helm_and_no_namespace_is_made() -> None:
    crds = (chart.CHART / "templates" / "crds.yaml").read_text()
    kinds = [line for line in crds.splitlines() if line.startswith("kind: ")]
    assert kinds == ["kind: CustomResourceDefinition"] * 10
    assert crds.count("helm.sh/resource-policy: keep") == 10
    templates = "".join(p.read_text() for p in (chart.CHART / "templates").glob("*.yaml"))
    assert "kind: Namespace" not in templates


def test_braces_in_the_manifests_reach_the_cluster_as_text() -> None:
    """A description or CEL rule with ``{{`` must not be read as a template action."""
    template = chart.Template()
    rendered = template.render({"kind": "X", "metadata": {"name": "a"}, "d": "say {{ hi }}"})
    assert rendered.endswith('d: say {{ "{{" }} hi }}\n')


def test_manifests_that_run_operators_differently_are_refused() -> None:
    objects = [m.obj for m in install.load(install.MANIFESTS)]
    (deployment,) = [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "kokpit-probe-operator"
    ]
    deployment["spec"]["replicas"] = 3
    monitor = yaml.safe_load(chart.SERVICE_MONITOR.read_text())
    with pytest.raises(chart.ChartError, match="differ in image, replicas or resources"):
        chart.defaults(objects, monitor)


def test_many_tokens_in_one_object_each_get_their_own_text() -> None:
    template = chart.Template()
    obj = {"items": [template.inline(f"<{n}>") for n in range(12)]}
    assert template.render(obj) == "items:\n" + "".join(f"- <{n}>\n" for n in range(12))
