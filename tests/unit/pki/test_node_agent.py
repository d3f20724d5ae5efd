"""The node agent's identity: a client certificate for kokpit:node-agent:<node> in the group
kokpit:node-agents, signed by the business cluster's CA; what it may do there (RBAC and the
admission policy, the same objects the checked-in YAML holds); and its report's condition."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kokpit.api.v1alpha1.nodefault import NODE_CONDITION_FAULTS
from kokpit.cli.agent import condition
from kokpit.controllers.cluster import access
from kokpit.pki import PKI, nodeagent
from kokpit.pki.certificates import ADMIN

ROOT = Path(__file__).parents[3]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    pki = PKI(tmp_path_factory.mktemp("pki"), clients=(ADMIN,), cluster="ns/biz")
    pki.ensure()
    return pki


def test_an_agent_certificate_names_its_node_and_group_and_is_signed_by_the_ca(ca: PKI) -> None:
    cert_pem, key_pem = nodeagent.issue(ca.ca_cert.read_bytes(), ca.ca_key.read_bytes(), "node-1")
    cert = x509.load_pem_x509_certificate(cert_pem)
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "kokpit:node-agent:node-1"
    )
    assert [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "kokpit:node-agents"
    ]
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert b"PRIVATE KEY" in key_pem


@pytest.mark.parametrize(
    "node", ["", "Node-1", "a:b", "node/1", "-node", "node-", "a" * 254, "n\nx", "kokpit:masters"]
)
def test_no_identity_for_what_is_not_a_node_name(node: str) -> None:
    with pytest.raises(nodeagent.InvalidNodeName):
        nodeagent.identity(node)


def test_a_kubeconfig_carries_the_ca_and_the_agents_certificate(ca: PKI) -> None:
    text = nodeagent.kubeconfig(
        server="https://biz:6443",
        ca_cert=ca.ca_cert.read_bytes(),
        ca_key=ca.ca_key.read_bytes(),
        node="node-1.example",
        cluster_name="biz",
    )
    config = yaml.safe_load(text)
    assert config["clusters"][0]["cluster"]["server"] == "https://biz:6443"
    assert config["users"][0]["name"] == "node-agent-node-1.example"
    assert "client-key-data" in config["users"][0]["user"]


def test_a_ca_key_that_is_not_ec_is_refused(ca: PKI) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="EC"):
        nodeagent.issue(ca.ca_cert.read_bytes(), rsa_key, "node-1")


def test_the_checked_in_yaml_is_what_kokpit_installs() -> None:
    for path, (objects, header) in nodeagent.FILES.items():
        text = (ROOT / path).read_text()
        assert text == nodeagent.documents(objects(), header), f"{path} is stale: make generate"
        assert list(yaml.safe_load_all(text)) == objects()


def test_every_business_cluster_gets_the_agents_rbac_and_policy() -> None:
    installed = {(o["kind"], o["metadata"]["name"]) for o in access.rbac()}
    for obj in (*nodeagent.rbac(), *nodeagent.policy()):
        assert (obj["kind"], obj["metadata"]["name"]) in installed
    assert {o["kind"] for o in access.rbac()} <= set(access.RESOURCES)


def test_the_agent_may_read_nodes_and_patch_their_status_only() -> None:
    role = nodeagent.rbac()[0]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
    ]


def test_the_policy_names_every_fault_condition_and_no_other_type() -> None:
    (types,) = [
        v["expression"]
        for v in nodeagent.policy()[0]["spec"]["variables"]
        if v["name"] == "faultTypes"
    ]
    assert types == "[" + ", ".join(f"'{t}'" for t in NODE_CONDITION_FAULTS) + "]"
    assert "'Ready'" not in types


def test_a_report_keeps_the_transition_time_unless_the_status_flips() -> None:
    current = {
        "type": "DiskFailure",
        "status": "True",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    same = condition(current, "DiskFailure", "True", "R", "sda failing")
    assert same["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = condition(current, "DiskFailure", "False", "R", "replaced")
    assert flipped["lastTransitionTime"] == flipped["lastHeartbeatTime"]
    new = condition(None, "DiskFailure", "True", "R", "")
    assert new["lastTransitionTime"] == new["lastHeartbeatTime"]
