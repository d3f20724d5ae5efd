import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from kokpit.local import components
from kokpit.local.assets import Assets
from kokpit.local.components import Layout, Ports, Settings
from kokpit.pki import (
    ADMIN,
    CA_VALIDITY,
    CLIENTS,
    CONTROLLER_MANAGER,
    ETCD_MATERIAL,
    LEAF_VALIDITY,
    MATERIAL,
    PKI,
    SCHEDULER,
)
from kokpit.providers.controlplane import ORDER, ComponentName, ComponentPlan, ControlPlane
from kokpit.providers.controlplane.kubernetes import PKI_DIR, KubernetesRuntime
from kokpit.providers.controlplane.process import ON_DISK, business_pki
from kokpit.runtime import Client, ClientConfig


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def lifetime(cert: x509.Certificate) -> dt.timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    pki = PKI(tmp_path / "pki")
    pki.ensure()
    return pki


def leaves(pki: PKI) -> list[Path]:
    return [pki.serving_cert, *(pki.client_cert(c) for c in CLIENTS)]


def test_every_certificate_is_signed_by_the_ca(pki: PKI) -> None:
    ca = load(pki.ca_cert)
    for path in leaves(pki):
        load(path).verify_directly_issued_by(ca)


def test_chains_verify_for_their_purpose_only(pki: PKI) -> None:
    """openssl builds each chain by its key identifiers and checks the purpose."""

    def verify(purpose: str, cert: Path) -> subprocess.CompletedProcess[str]:
        argv = ["openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile"]
        return subprocess.run(
            [*argv, str(pki.ca_cert), str(cert)], capture_output=True, text=True, check=False
        )

    assert verify("sslserver", pki.serving_cert).returncode == 0
    assert verify("sslclient", pki.serving_cert).returncode != 0
    for who in CLIENTS:
        assert verify("sslclient", pki.client_cert(who)).returncode == 0, who
        assert verify("sslserver", pki.client_cert(who)).returncode != 0, who


def test_the_serving_certificate_verifies_for_the_apiserver_names(pki: PKI) -> None:
    store = Store([load(pki.ca_cert)])
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName("kubernetes"))
    chain = verifier.verify(load(pki.serving_cert), [])
    assert chain[-1] == load(pki.ca_cert)


def test_leaves_live_months_and_the_ca_years(pki: PKI, tmp_path: Path) -> None:
    assert lifetime(load(pki.ca_cert)) == CA_VALIDITY + dt.timedelta(minutes=5)
    assert dt.timedelta(days=90) == LEAF_VALIDITY
    for path in leaves(pki):
        assert lifetime(load(path)) == LEAF_VALIDITY + dt.timedelta(minutes=5), path
    short = PKI(tmp_path / "short", leaf_validity=dt.timedelta(days=7))
    short.ensure()
    assert lifetime(load(short.serving_cert)) == dt.timedelta(days=7, minutes=5)


def test_key_identifiers_chain_leaves_to_their_ca(pki: PKI) -> None:
    ca = load(pki.ca_cert)
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ca_ski == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    for path in leaves(pki):
        cert = load(path)
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ca_ski.digest
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_server_and_client_usages(pki: PKI) -> None:
    def usages(path: Path) -> tuple[x509.KeyUsage, list[x509.ObjectIdentifier]]:
        cert = load(path)
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical
        return ku.value, list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    ku, eku = usages(pki.serving_cert)
    assert eku == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ku.digital_signature
    assert not ku.key_cert_sign
    assert not ku.key_encipherment
    for who in CLIENTS:
        ku, eku = usages(pki.client_cert(who))
        assert eku == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert not ku.key_cert_sign
    ca_ku = load(pki.ca_cert).extensions.get_extension_for_class(x509.KeyUsage).value
    assert ca_ku.key_cert_sign
    assert ca_ku.crl_sign


def test_each_clusters_ca_has_its_own_subject(tmp_path: Path) -> None:
    a = business_pki(tmp_path / "a", "10.100.0.0/16", cluster="team-a/biz", cluster_uid="uid-a")
    b = business_pki(tmp_path / "b", "10.100.0.0/16", cluster="team-b/biz", cluster_uid="uid-b")
    again = business_pki(tmp_path / "c", "10.100.0.0/16", cluster="team-a/biz", cluster_uid="uid-c")
    local_1, local_2 = PKI(tmp_path / "l1"), PKI(tmp_path / "l2")
    for pki in (a, b, again, local_1, local_2):
        pki.ensure()
    subjects = [load(p.ca_cert).subject for p in (a, b, again, local_1, local_2)]
    assert len(set(subjects)) == len(subjects)
    cn = subjects[0].get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert "team-a/biz" in str(cn)
    assert subjects[0].get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "uid-a"
    assert load(a.serving_cert).issuer == subjects[0]
    long = PKI(tmp_path / "long", cluster="n" * 63 + "/" + "c" * 253, cluster_uid="u" * 36)
    long.ensure()  # a CN is cut to the 64 characters X.509 allows


def test_client_certificates_carry_user_and_groups(pki: PKI) -> None:
    admin = load(pki.client_cert(ADMIN)).subject
    assert admin.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kokpit-admin"
    groups = [a.value for a in admin.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert groups == ["system:masters"]
    kcm = load(pki.client_cert(CONTROLLER_MANAGER)).subject
    assert kcm.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == []


def test_serving_certificate_names_loopback_and_the_service(pki: PKI) -> None:
    sans = load(pki.serving_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "kubernetes.default.svc" in sans.value.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)]


def test_ensure_keeps_what_exists(pki: PKI) -> None:
    before = {p.name: p.read_bytes() for p in pki.dir.iterdir()}
    pki.ensure()
    assert {p.name: p.read_bytes() for p in pki.dir.iterdir()} == before


def test_ensure_renews_leaves_near_their_end_and_keeps_the_ca(tmp_path: Path) -> None:
    old = PKI(tmp_path, leaf_validity=dt.timedelta(days=30))
    old.ensure()
    ca, serving = old.ca_cert.read_bytes(), old.serving_cert.read_bytes()
    renewing = PKI(tmp_path)  # 90 days: 30 left is less than a third
    assert renewing.due(renewing.serving_cert)
    renewing.ensure()
    assert renewing.ca_cert.read_bytes() == ca
    assert renewing.serving_cert.read_bytes() != serving
    assert lifetime(load(renewing.serving_cert)) == LEAF_VALIDITY + dt.timedelta(minutes=5)
    load(renewing.serving_cert).verify_directly_issued_by(load(renewing.ca_cert))
    assert not renewing.due(renewing.serving_cert)


def test_private_keys_are_private(pki: PKI) -> None:
    for key in pki.dir.glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key
    for cert in [*pki.dir.glob("*.crt"), pki.sa_pub]:
        assert cert.stat().st_mode & 0o777 == 0o644, cert
    assert pki.dir.stat().st_mode & 0o777 == 0o700
    assert isinstance(load(pki.ca_cert).public_key(), ec.EllipticCurvePublicKey)


def test_ensure_and_write_set_modes_on_files_that_exist(pki: PKI, tmp_path: Path) -> None:
    pki.ca_key.chmod(0o644)
    pki.sa_key.chmod(0o666)
    pki.ca_cert.chmod(0o600)
    pki.dir.chmod(0o755)
    pki.ensure()
    assert pki.ca_key.stat().st_mode & 0o777 == 0o600
    assert pki.sa_key.stat().st_mode & 0o777 == 0o600
    assert pki.ca_cert.stat().st_mode & 0o777 == 0o644
    assert pki.dir.stat().st_mode & 0o777 == 0o700

    copy = PKI(tmp_path / "copy")
    copy.write(pki.material())
    copy.ca_key.chmod(0o644)
    copy.write(pki.material())  # same bytes: nothing rewritten, the mode still set
    assert copy.ca_key.stat().st_mode & 0o777 == 0o600


def test_write_holds_exactly_the_material_and_only_plain_names(pki: PKI, tmp_path: Path) -> None:
    copy = PKI(tmp_path / "copy")
    copy.write(pki.material())
    copy.write({"ca.crt": pki.ca_cert.read_bytes()})
    assert [p.name for p in copy.dir.iterdir()] == ["ca.crt"]
    with pytest.raises(ValueError, match="plain file name"):
        copy.write({"../escaped.key": b"x", "ca.key": b"x"})
    assert not (tmp_path / "escaped.key").exists()
    assert [p.name for p in copy.dir.iterdir()] == ["ca.crt"]  # refused before any change


# What each component gets.


def pki_files(argv: list[str], directory: str) -> set[str]:
    """The files under ``directory`` that a command line names."""
    found = set()
    for arg in argv:
        value = arg.split("=", 1)[-1]
        if value.startswith(directory + "/"):
            found.add(value.removeprefix(directory + "/"))
    return found


BUILDERS = {
    "etcd": components.etcd,
    "kube-apiserver": components.apiserver,
    "kube-controller-manager": components.controller_manager,
    "kube-scheduler": components.scheduler,
    "kwok": components.kwok,
}


def test_the_material_map_is_what_the_flags_read(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    ports = Ports(1, 2, 3, 4, 5, 6)
    assets = Assets(tmp_path / "bin", "v0")
    for name, build in BUILDERS.items():
        argv = build(assets, layout, ports, Settings()).argv
        assert pki_files(argv, str(layout.pki.dir)) == set(MATERIAL[name]), name
    assert set(MATERIAL) == set(BUILDERS)
    assert "ca.key" not in MATERIAL["kube-apiserver"]
    assert MATERIAL["etcd"] == MATERIAL["kube-scheduler"] == ()
    # The process runtime keeps the other client keys only inside their kubeconfigs.
    assert f"{CONTROLLER_MANAGER.file}.key" not in ON_DISK
    assert f"{SCHEDULER.file}.key" not in ON_DISK


def workload(name: ComponentName) -> Any:
    """The pod spec the kubernetes runtime applies for ``name`` (nothing is sent)."""
    runtime = KubernetesRuntime(Client(ClientConfig("https://unused.invalid")))
    _, obj = runtime._workload(ControlPlane("team-a", "biz", "uid-1"), ComponentPlan(name, "v1"))
    return obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("name", ORDER)
def test_pods_mount_only_their_own_files(name: ComponentName) -> None:
    spec = workload(name)
    container = spec["containers"][0]
    volumes = {v["name"]: v for v in spec["volumes"]}
    pki = volumes.get("pki", {}).get("secret", {})
    mounted = {item["path"] for item in pki.get("items", [])}
    assert mounted == set(MATERIAL[name]) | set(ETCD_MATERIAL.get(name, ()))
    assert "etcd-ca.key" not in mounted, "only the Cluster-Operator signs with etcd's CA"
    assert pki_files(container["command"], PKI_DIR) <= mounted
    if pki:
        assert pki["defaultMode"] == 0o440
    kubeconfigs = volumes.get("kubeconfig", {}).get("secret", {}).get("items", [])
    expected = {
        "kube-controller-manager": ["controller-manager.kubeconfig"],
        "kube-scheduler": ["scheduler.kubeconfig"],
    }.get(name, [])
    assert [i["key"] for i in kubeconfigs] == expected


@pytest.mark.parametrize("name", ORDER)
def test_pods_run_restricted(name: ComponentName) -> None:
    spec = workload(name)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == pod["fsGroup"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    container = spec["containers"][0]["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert "/tmp" in mounts
    if name == "etcd":  # its data directory is a volume, writable by the pod's group
        assert "/var/lib/etcd" in mounts
    assert spec["automountServiceAccountToken"] is False
