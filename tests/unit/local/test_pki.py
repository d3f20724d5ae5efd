from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kokpit.local.pki import ADMIN, CLIENTS, CONTROLLER_MANAGER, PKI


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_every_certificate_is_signed_by_the_ca(tmp_path: Path) -> None:
    pki = PKI(tmp_path / "pki")
    pki.ensure()
    ca = load(pki.ca_cert)
    for path in [pki.serving_cert, *(pki.client_cert(c) for c in CLIENTS)]:
        cert = load(path)
        cert.verify_directly_issued_by(ca)


def test_client_certificates_carry_user_and_groups(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    pki.ensure()
    admin = load(pki.client_cert(ADMIN)).subject
    assert admin.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kokpit-admin"
    groups = [a.value for a in admin.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert groups == ["system:masters"]
    kcm = load(pki.client_cert(CONTROLLER_MANAGER)).subject
    assert kcm.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == []


def test_serving_certificate_names_loopback_and_the_service(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    pki.ensure()
    sans = load(pki.serving_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "kubernetes.default.svc" in sans.value.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)]


def test_ensure_keeps_what_exists(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    pki.ensure()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    pki.ensure()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_private_keys_are_private(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    pki.ensure()
    for key in tmp_path.glob("*.key"):
        assert key.stat().st_mode & 0o077 == 0, key
    assert isinstance(
        x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()).public_key(),
        ec.EllipticCurvePublicKey,
    )
