"""The fault hub's and the repair workflow's API is enforced by the API server: one NodeFault
per Machine and fault type, only known fault types, ladders that can run, https webhooks and
BMCs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kokpit.local import Kubectl, KubectlError

pytestmark = pytest.mark.usefixtures("kokpit_crds")


def create(kubectl: Kubectl, obj: dict[str, Any]) -> None:
    kubectl.run("create", "-f", "-", stdin=json.dumps(obj))


def rejected(kubectl: Kubectl, obj: dict[str, Any]) -> str:
    with pytest.raises(KubectlError) as e:
        create(kubectl, obj)
    return e.value.stderr


def fault(
    namespace: str, machine: str = "m-1", type_: str = "KernelDeadlock", **meta: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "NodeFault",
        "metadata": {"name": f"{machine}.{type_.lower()}", "namespace": namespace, **meta},
        "spec": {"machineRef": {"name": machine}, "type": type_},
    }


def policy(namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "RemediationPolicy",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {
            "machineSelector": {"matchLabels": {"pool": "a"}},
            "faultTypes": ["KernelDeadlock", "NodeNotReady"],
            "steps": [{"action": "RestartKubelet", "timeoutSeconds": 60}, {"action": "Reboot"}],
            **spec,
        },
    }


def test_a_fault_record_is_named_by_its_machine_and_type(kubectl: Kubectl, namespace: str) -> None:
    create(kubectl, fault(namespace))
    table = kubectl.run("get", "nf", "-n", namespace)
    assert table.split()[:9] == [
        "NAME",
        "MACHINE",
        "NODE",
        "TYPE",
        "STATE",
        "COUNT",
        "SOURCE",
        "LAST-SEEN",
        "AGE",
    ]
    assert "m-1.kerneldeadlock   m-1" in table
    other = fault(namespace)
    other["metadata"]["name"] = "m-1.another-name"
    assert "a NodeFault is named <machine>.<type in lower case>" in rejected(kubectl, other)


def test_a_fault_record_keeps_its_machine_and_type(kubectl: Kubectl, namespace: str) -> None:
    create(kubectl, fault(namespace, type_="DiskFailure"))
    with pytest.raises(KubectlError, match="machine and type never change"):
        kubectl.run(
            "patch",
            "nf",
            "-n",
            namespace,
            "m-1.diskfailure",
            "--type=merge",
            "-p",
            '{"spec": {"type": "GPUFailure"}}',
        )


def test_unknown_fault_types_are_rejected(kubectl: Kubectl, namespace: str) -> None:
    assert 'Unsupported value: "CosmicRay"' in rejected(
        kubectl, fault(namespace, type_="CosmicRay")
    )
    bad = policy(namespace, faultTypes=["KernelDeadlock", "CosmicRay"])
    assert 'Unsupported value: "CosmicRay"' in rejected(kubectl, bad)


def test_a_valid_policy_gets_its_defaults(kubectl: Kubectl, namespace: str) -> None:
    create(kubectl, policy(namespace))
    spec = kubectl.get("rp", "-n", namespace, "p")["spec"]
    assert spec["steps"][1] == {"action": "Reboot", "timeoutSeconds": 600}
    assert spec["stormStop"] == {"maxConcurrent": 5, "minHealthyPercent": 70}
    assert spec["recoverySeconds"] == 60
    assert spec["drainTimeoutSeconds"] == 600


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"steps": [{"action": "Ticket"}]}, "a Ticket step needs spec.ticketWebhook"),
        ({"steps": []}, "spec.steps: Invalid value"),
        ({"steps": [{"action": "Pray"}]}, 'Unsupported value: "Pray"'),
        (
            {"steps": [{"action": "Ticket"}], "ticketWebhook": {"url": "http://t.example.com/x"}},
            "must be an https URL",
        ),
        (
            {"machineSelector": {"matchExpressions": [{"key": "pool", "operator": "In"}]}},
            "In and NotIn need at least one value",
        ),
        ({"stormStop": {"minHealthyPercent": 101}}, "should be less than or equal to 100"),
        ({"stormStop": {"scopeLabel": "not a label"}}, "scopeLabel must be a label key"),
    ],
)
def test_bad_policies_are_rejected_with_a_clear_message(
    kubectl: Kubectl, namespace: str, spec: dict[str, Any], message: str
) -> None:
    assert message in rejected(kubectl, policy(namespace, **spec))


def test_a_remediation_keeps_its_fault_machine_and_policy(kubectl: Kubectl, namespace: str) -> None:
    create(
        kubectl,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Remediation",
            "metadata": {"name": "m-1.kerneldeadlock", "namespace": namespace},
            "spec": {
                "faultRef": {"name": "m-1.kerneldeadlock"},
                "machineRef": {"name": "m-1"},
                "policyRef": {"name": "p"},
            },
        },
    )
    assert "MACHINE" in kubectl.run("get", "rem", "-n", namespace)
    with pytest.raises(KubectlError, match="fault, machine and policy never change"):
        kubectl.run(
            "patch",
            "rem",
            "-n",
            namespace,
            "m-1.kerneldeadlock",
            "--type=merge",
            "-p",
            '{"spec": {"policyRef": {"name": "q"}}}',
        )


def test_a_bmc_is_https_and_named_by_its_redfish_system(kubectl: Kubectl, namespace: str) -> None:
    def machine(bmc: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": "m-bmc", "namespace": namespace},
            "spec": {
                "clusterRef": {"name": "c"},
                "address": "10.0.0.1",
                "packageVersion": "mpv",
                "executor": "sim",
                "bmc": {"credentialsSecretRef": {"name": "bmc"}, **bmc},
            },
        }

    good = {"address": "https://10.0.0.9:8000", "systemID": "/redfish/v1/Systems/1"}
    assert "must be an https URL" in rejected(
        kubectl, machine({**good, "address": "http://10.0.0.9"})
    )
    assert "spec.bmc.systemID" in rejected(
        kubectl, machine({**good, "systemID": "/redfish/v1/Systems/../../etc"})
    )
    create(kubectl, machine(good))
    assert kubectl.get("km", "-n", namespace, "m-bmc")["spec"]["bmc"]["insecureSkipVerify"] is False
