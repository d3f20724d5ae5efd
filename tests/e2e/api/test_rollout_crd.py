"""The Rollout's schema and CEL rules in the real API server: what a person gets wrong is
refused at ``kubectl apply``, saying what is wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kokpit.local import Kubectl, KubectlError

pytestmark = pytest.mark.usefixtures("kokpit_crds")


def rollout(namespace: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "target": {"kind": "Machine", "selector": {}, "packageVersion": "app-2"},
        "batches": [{"size": "1"}, {"size": "100%"}],
    }
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "r1", "namespace": namespace},
        "spec": base | spec,
    }


def metric(**fields: Any) -> dict[str, Any]:
    return {"name": "m", "query": "up", **fields}


def analysis(*metrics: dict[str, Any], prometheus: str = "http://p:9090") -> dict[str, Any]:
    return {"prometheus": prometheus, "metrics": list(metrics)}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"batches": [{"size": "0"}]}, "must be a count from 1 to 99999"),
        ({"batches": [{"size": "101%"}]}, "or a percentage from 1% to 100%"),
        ({"batches": [{"size": "ten"}]}, "must be a count from 1 to 99999"),
        ({"batches": []}, "spec.batches: Invalid value"),
        (
            {"target": {"kind": "Node", "selector": {}, "packageVersion": "app-2"}},
            'Unsupported value: "Node"',
        ),
        (
            {"target": {"kind": "Machine", "selector": {}, "packageVersion": "App_2"}},
            "must be the name of a package version",
        ),
        (
            {"analysis": analysis(metric(successCondition="result >= 0.9; rm -rf /"))},
            "must compare result with a number, such as 'result >= 0.99'",
        ),
        (
            {"analysis": analysis(metric(failureCondition="value > 1"))},
            "must compare result with a number, such as 'result > 2.5'",
        ),
        ({"analysis": analysis(metric())}, "a metric needs a successCondition, a failureCondition"),
        (
            {"analysis": analysis(metric(successCondition="result > 0"), prometheus="file:///x")},
            "must be an http or https URL",
        ),
    ],
)
def test_bad_rollouts_are_refused_saying_why(
    kubectl: Kubectl, namespace: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubectlError) as refused:
        kubectl.run("create", "-f", "-", stdin=json.dumps(rollout(namespace, **spec)))
    assert message in refused.value.stderr


def test_a_rollout_gets_its_defaults_and_its_target_never_changes(
    kubectl: Kubectl, namespace: str
) -> None:
    good = analysis(metric(successCondition="result >= 0.9 && result <= 1"))
    kubectl.run("create", "-f", "-", stdin=json.dumps(rollout(namespace, analysis=good)))
    spec = kubectl.get("rollout", "-n", namespace, "r1")["spec"]
    assert spec["healthCheck"] == {"maxUnavailable": 0, "timeoutSeconds": 600}
    assert spec["batches"][0] == {"size": "1", "pauseSeconds": 0, "manualGate": False}
    assert (spec["analysis"]["intervalSeconds"], spec["analysis"]["count"]) == (30, 3)
    table = kubectl.run("get", "ro", "-n", namespace)  # short name, printer columns
    assert table.split()[:4] == ["NAME", "KIND", "VERSION", "PHASE"]
    with pytest.raises(KubectlError) as refused:
        kubectl.run(
            "patch",
            "rollout",
            "r1",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"target": {"packageVersion": "app-3"}}}),
        )
    assert "a Rollout's target never changes" in refused.value.stderr
