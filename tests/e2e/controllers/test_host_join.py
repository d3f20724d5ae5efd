"""A host joins its business cluster by TLS bootstrap, against the real meta-cluster, a real
business cluster made by the Cluster-Operator (``process`` runtime) and a real sshd host.

The Cluster-Operator runs with short-lived bootstrap tokens, so rotation and expiry happen
within a test. The kubelet's side is played here with the credentials the host was given
(a real kubelet joining is in ``test_real_kubelet.py``): what the bootstrap kubeconfig allows
is exactly what a kubelet does with it."""

from __future__ import annotations

import base64
import contextlib
import json
import stat
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fixtures.business import BusinessCluster
from fixtures.samples import cluster
from kokpit.api.v1alpha1 import CLUSTERS, MACHINE_PACKAGE_VERSIONS, MACHINES
from kokpit.controllers.machine.join import BOOTSTRAP_KUBECONFIG
from kokpit.local import Kubectl, LocalCluster
from kokpit.pki.bootstrap import GROUP
from kokpit.providers.machine.sshd import SimulatedHost
from kokpit.runtime import Client, ClientConfig, Forbidden, NotFound, Resource
from kokpit.runtime.errors import Unauthorized
from kokpit.runtime.resources import EVENTS, NODES, SECRETS
from tests.e2e.controllers.test_machine_operator import (
    Operator,
    condition,
    package,
    package_version,
)
from tests.e2e.rbac import operator_identity
from tests.e2e.support import until

pytestmark = pytest.mark.usefixtures("kokpit_crds", "condition_reports_policy")
NS = "join-e2e"
#: Seconds a bootstrap token lives here: a successor every 20 s, expiry after 30 s.
TTL = 30
#: How the module's business cluster (the `biz` fixture) is made.
BUSINESS_CLUSTER = {"operator_args": ("--bootstrap-token-ttl", str(TTL))}
CSRS = Resource(
    "certificates.k8s.io",
    "v1",
    "certificatesigningrequests",
    "CertificateSigningRequest",
    namespaced=False,
)
Object = dict[str, Any]


@pytest.fixture
async def business(biz: BusinessCluster) -> AsyncIterator[Client]:
    async with Client(ClientConfig.from_kubeconfig(biz.kubeconfig)) as c:
        yield c


@pytest.fixture
async def operator(
    local_cluster: LocalCluster, kubectl: Kubectl, biz: BusinessCluster
) -> AsyncIterator[Operator]:
    """The Machine-Operator with the product's default: ssh hosts run their own kubelet."""
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    identity = operator_identity(kubectl, admin, "machine-operator", [NS])
    op = Operator(identity, executors=("ssh",), kwok_nodes=())
    await op.start()
    yield op
    await op.stop()


def mirror_token(secret: Object) -> tuple[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items() if k != "ca.crt"}
    return data["token-id"], data["token-secret"]


async def current_token(client: Client) -> tuple[str, str]:
    return mirror_token(await client.get(SECRETS, "biz-bootstrap-token", namespace=NS))


def token_client(biz_server: str, ca: bytes, token: str) -> Client:
    return Client(ClientConfig(server=biz_server, ca_data=ca, token=token))


async def test_the_cluster_issues_a_bootstrap_token_rotates_it_and_expired_ones_go(
    client: Client, business: Client, biz: BusinessCluster
) -> None:
    secret = await until(
        "the bootstrap token Secret",
        lambda: _get(client, SECRETS, "biz-bootstrap-token", NS),
        within=60,
    )
    assert secret["type"] == "kokpit.io/bootstrap-token"
    cluster = await client.get(CLUSTERS, "biz", namespace=NS)
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["uid"], owner["controller"]) == (cluster["metadata"]["uid"], True)
    first_id, first_secret = mirror_token(secret)
    server = base64.b64decode(secret["data"]["server"]).decode()
    ca = base64.b64decode(secret["data"]["ca.crt"])
    assert server == cluster["status"]["endpoint"]

    stored = await business.get(SECRETS, f"bootstrap-token-{first_id}", namespace="kube-system")
    data = {k: base64.b64decode(v).decode() for k, v in stored["data"].items()}
    assert stored["type"] == "bootstrap.kubernetes.io/token"
    assert data["auth-extra-groups"] == GROUP
    assert data["usage-bootstrap-authentication"] == "true"
    # The token authenticates, as a bootstrapper of kokpit's group, and may do nothing else.
    async with token_client(server, ca, f"{first_id}.{first_secret}") as boot:
        review = await boot.create(
            Resource(
                "authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False
            ),
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        user = review["status"]["userInfo"]
        assert user["username"] == f"system:bootstrap:{first_id}"
        assert GROUP in user["groups"]
        for forbidden in (boot.list(NODES), boot.list(SECRETS, namespace="kube-system")):
            with pytest.raises(Forbidden):
                await forbidden

    async def rotated() -> tuple[str, str] | None:
        found = await current_token(client)
        return found if found[0] != first_id else None

    second_id, _ = await until("a successor token", rotated, within=TTL)
    await business.get(SECRETS, f"bootstrap-token-{second_id}", namespace="kube-system")

    async def cleaned() -> bool:
        return await _get(business, SECRETS, f"bootstrap-token-{first_id}", "kube-system") is None

    await until("the tokencleaner deleting the expired token", cleaned, within=TTL + 30)
    async with token_client(server, ca, f"{first_id}.{first_secret}") as boot:
        with pytest.raises(Unauthorized):
            await boot.list(NODES)
    events = (await client.list(EVENTS, namespace=NS)).items
    issued = [e["note"] for e in events if e.get("reason") == "BootstrapTokenIssued"]
    assert any(second_id in note for note in issued)
    assert not any(first_secret in json.dumps(e) for e in events)


async def test_a_host_gets_a_bootstrap_kubeconfig_and_joins_with_a_node_certificate(
    operator: Operator,
    client: Client,
    business: Client,
    ssh_hosts: list[SimulatedHost],
) -> None:
    """Before the kubelet package is installed, the host has a bootstrap kubeconfig (0600,
    the cluster's endpoint and CA, a current token); the package is told where it is and to
    register with kokpit's taint. With it, a CSR for the node's identity is approved and
    signed by the cluster's CA; with that certificate the node registers itself, and the
    Machine adopts that Node (kokpit creates none)."""
    host = ssh_hosts[0]
    host.start()
    record = (
        'env_file="$KOKPIT_ROOT/opt/kokpit/kubelet.env"\n'
        '{ echo "taints=$KOKPIT_REGISTER_WITH_TAINTS"; echo "ip=$KOKPIT_NODE_IP";'
        ' echo "path=$KOKPIT_BOOTSTRAP_KUBECONFIG";'
        ' if [ -s "$KOKPIT_ROOT$KOKPIT_BOOTSTRAP_KUBECONFIG" ]; then echo present; fi;'
        ' } > "$env_file"'
    )
    await client.apply(
        MACHINE_PACKAGE_VERSIONS,
        package_version("join-node", package("kubelet", "1.36.3", kind="Kubelet", install=record)),
        field_manager="test",
    )
    name = "joins"
    await client.apply(SECRETS, host.ssh_secret(NS, name), field_manager="test")
    gate = {
        "conditionType": "example.com/NetworkReady",
        "mode": "Continuous",
        "reporter": {"namespace": NS, "name": "network-operator"},
    }
    await client.create(
        MACHINES,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "clusterRef": {"name": "biz"},
                "packageVersion": "join-node",
                "address": host.address,
                "port": host.port,
                "sshSecretRef": {"name": name},
                "readinessGates": [gate],
            },
        },
    )
    try:
        obj = await until(
            "the Machine waiting for its kubelet",
            lambda: _machine_if(
                client,
                name,
                lambda o: condition(o, "NodeJoined").get("reason") == "NodeNotRegistered",
            ),
            within=60,
        )
        env = (host.root / "opt/kokpit/kubelet.env").read_text().splitlines()
        assert env == [
            "taints=kokpit.io/not-ready:NoSchedule",
            f"ip={host.address}",
            f"path={BOOTSTRAP_KUBECONFIG}",
            "present",  # written before the kubelet package was installed
        ]
        path = host.root / BOOTSTRAP_KUBECONFIG.lstrip("/")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        config = json.loads(path.read_text())
        cluster_entry = config["clusters"][0]["cluster"]
        token = config["users"][0]["user"]["token"]
        events = (await client.list(EVENTS, namespace=NS)).items
        assert not any(token in json.dumps(e) for e in events)
        assert token not in json.dumps(obj)
        server = cluster_entry["server"]
        ca = base64.b64decode(cluster_entry["certificate-authority-data"])
        assert server == (await client.get(CLUSTERS, "biz", namespace=NS))["status"]["endpoint"]
        token_id = token.split(".")[0]
        await business.get(SECRETS, f"bootstrap-token-{token_id}", namespace="kube-system")
        with pytest.raises(NotFound):  # kokpit registered nothing itself
            await business.get(NODES, name)

        # What the kubelet does with it: a CSR for its node identity, approved and signed.
        key = ec.generate_private_key(ec.SECP256R1())
        request = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                        x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{name}"),
                    ]
                )
            )
            .sign(key, hashes.SHA256())
        )
        async with token_client(server, ca, token) as boot:
            csr = await boot.create(
                CSRS,
                {
                    "apiVersion": "certificates.k8s.io/v1",
                    "kind": "CertificateSigningRequest",
                    "metadata": {"generateName": "node-csr-"},
                    "spec": {
                        "request": base64.b64encode(
                            request.public_bytes(serialization.Encoding.PEM)
                        ).decode(),
                        "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                        "usages": ["digital signature", "client auth"],
                    },
                },
            )
        csr_name = csr["metadata"]["name"]

        async def issued() -> Object | None:
            found = await business.get(CSRS, csr_name)
            return found if (found.get("status") or {}).get("certificate") else None

        signed = await until("the CSR approved and signed", issued, within=30)
        approved = [c for c in signed["status"]["conditions"] if c["type"] == "Approved"]
        assert approved
        assert approved[0]["reason"] == "AutoApproved"
        cert = x509.load_pem_x509_certificate(base64.b64decode(signed["status"]["certificate"]))
        ca_cert = x509.load_pem_x509_certificate(ca)
        assert cert.issuer == ca_cert.subject
        cert.verify_directly_issued_by(ca_cert)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        node_config = ClientConfig(
            server=server,
            ca_data=ca,
            cert_data=base64.b64decode(signed["status"]["certificate"]),
            key_data=key_pem,
        )
        async with Client(node_config) as kubelet:
            node = await kubelet.create(
                NODES,
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name},
                    "spec": {"taints": [{"key": "kokpit.io/not-ready", "effect": "NoSchedule"}]},
                },
            )
            await kubelet.patch(
                NODES,
                name,
                {"status": {"addresses": [{"type": "InternalIP", "address": host.address}]}},
                subresource="status",
            )
            # The Node authorizer and NodeRestriction: a node is itself and no other.
            with pytest.raises(Forbidden):
                await kubelet.create(
                    NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "other"}}
                )
            with pytest.raises(Forbidden):
                await kubelet.list(SECRETS, namespace="kube-system")
        assert node["spec"]["taints"][0]["key"] == "kokpit.io/not-ready"
        obj = await until(
            "the Machine adopting the node",
            lambda: _machine_if(client, name, lambda o: o["status"].get("nodeName") == name),
            within=30,
        )
        adopted = await business.get(NODES, name)
        assert adopted["metadata"]["annotations"]["kokpit.io/machine"] == f"{NS}/{name}"
        assert any(t["key"] == "kokpit.io/not-ready" for t in adopted["spec"]["taints"])
    finally:
        with contextlib.suppress(NotFound):
            await client.delete(MACHINES, name, namespace=NS)
        await until(
            "the Machine gone",
            lambda: _gone(client, MACHINES, name, NS),
            within=60,
        )
    with pytest.raises(NotFound):  # its node goes with it
        await business.get(NODES, name)


async def _get(client: Client, resource: Resource, name: str, namespace: str) -> Object | None:
    try:
        return await client.get(resource, name, namespace=namespace)
    except NotFound:
        return None


async def _gone(client: Client, resource: Resource, name: str, namespace: str) -> bool:
    return await _get(client, resource, name, namespace) is None


async def _machine_if(client: Client, name: str, done: Any) -> Object | None:
    obj = await client.get(MACHINES, name, namespace=NS)
    return obj if done(obj) else None


async def test_a_bootstrap_token_secret_the_cluster_did_not_issue_never_reaches_a_host(
    operator: Operator, client: Client, ssh_hosts: list[SimulatedHost]
) -> None:
    """A tenant may write a Secret named like a Cluster's bootstrap token, pointing hosts at
    an API server of its choosing: the Machine-Operator refuses it (not the Cluster's), says
    so without quoting it, and installs nothing on the host."""
    host = ssh_hosts[1]
    host.start()
    await client.create(CLUSTERS, cluster(NS, "forged", "no-such-version", "process"))
    forged_token = "abcdef.0123456789abcdef"
    data = {
        "token-id": b"abcdef",
        "token-secret": b"0123456789abcdef",
        "issued": b"2026-01-01T00:00:00Z",
        "expiration": b"2099-01-01T00:00:00Z",
        "server": b"https://attacker.example:6443",
        "ca.crt": b"-----BEGIN CERTIFICATE-----\n",
    }
    await client.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kokpit.io/bootstrap-token",
            "metadata": {"name": "forged-bootstrap-token", "namespace": NS},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        },
    )
    await client.apply(
        MACHINE_PACKAGE_VERSIONS,
        package_version("forged-node", package("kubelet", "1.36.3", kind="Kubelet")),
        field_manager="test",
    )
    await client.apply(SECRETS, host.ssh_secret(NS, "forged"), field_manager="test")
    await client.create(
        MACHINES,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": "forged", "namespace": NS},
            "spec": {
                "clusterRef": {"name": "forged"},
                "packageVersion": "forged-node",
                "address": host.address,
                "port": host.port,
                "sshSecretRef": {"name": "forged"},
            },
        },
    )
    try:
        obj = await until(
            "the Machine refusing the Secret",
            lambda: _machine_if(
                client,
                "forged",
                lambda o: condition(o, "NodeJoined").get("reason") == "BootstrapTokenNotOwned",
            ),
            within=60,
        )
        assert "forged-bootstrap-token" in condition(obj, "NodeJoined")["message"]
        assert not (host.root / BOOTSTRAP_KUBECONFIG.lstrip("/")).exists()
        assert not (host.root / "opt/kokpit/kubelet.version").exists(), "nothing installed"
        events = (await client.list(EVENTS, namespace=NS)).items
        text = json.dumps([obj, events])
        assert forged_token not in text
        assert "attacker.example" not in text
    finally:
        with contextlib.suppress(NotFound):
            await client.delete(MACHINES, "forged", namespace=NS)
        await until("the Machine gone", lambda: _gone(client, MACHINES, "forged", NS), within=60)
        await client.delete(CLUSTERS, "forged", namespace=NS)
