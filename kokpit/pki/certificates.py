"""Certificates and keys for a Kubernetes control plane: the local meta-cluster's and each
business cluster's.

One self-signed CA signs the kube-apiserver serving certificate and one client certificate per
identity (the admin, the controller-manager, the scheduler, kwok). The kube-apiserver's x509
authenticator maps a certificate's CN to the user and its O entries to groups, so RBAC sees
``system:kube-controller-manager`` and ``system:kube-scheduler`` just as on a kubeadm cluster.
A separate key pair signs service-account tokens. Keys are ECDSA P-256: as strong as RSA-3072
for this purpose and generated in milliseconds.

Files are written once and reused, so certificates survive ``down``/``up``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=3650)
#: DNS names and addresses the kube-apiserver serving certificate is valid for.
APISERVER_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
APISERVER_IPS = ("127.0.0.1", "10.96.0.1")


@dataclass(frozen=True)
class Identity:
    """A client certificate's subject: the user name and the groups RBAC sees."""

    file: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN = Identity("admin", "kokpit-admin", ("system:masters",))
CONTROLLER_MANAGER = Identity("controller-manager", "system:kube-controller-manager")
SCHEDULER = Identity("scheduler", "system:kube-scheduler")
#: kwok stands in for every kubelet at once (it writes any Node's and Pod's status), so it needs
#: cluster-wide rights the Node authorizer would never give one kubelet.
KWOK = Identity("kwok", "kokpit-kwok", ("system:masters",))
CLIENTS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KWOK)
#: kokpit's Machine-Operator inside a business cluster: no group, so RBAC sees only the user
#: and grants only what the Cluster-Operator binds to it (the admin kubeconfig is for people).
MACHINE_OPERATOR = Identity("machine-operator", "kokpit:machine-operator")


@dataclass(frozen=True)
class PKI:
    """Paths of the PEM files in a cluster's ``pki/`` directory."""

    dir: Path
    #: Client certificates to issue.
    clients: tuple[Identity, ...] = CLIENTS
    #: Addresses the serving certificate is valid for besides :data:`APISERVER_IPS` (a
    #: business cluster's first Service IP, say).
    extra_ips: tuple[str, ...] = ()

    def material(self) -> dict[str, bytes]:
        """Every PEM file by name: what a business cluster keeps in its Secret."""
        return {p.name: p.read_bytes() for p in sorted(self.dir.glob("*.*")) if p.is_file()}

    def write(self, material: dict[str, bytes]) -> None:
        """Write PEM files (from a Secret) that differ from what is on disk; keys stay 0600."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, data in material.items():
            path = self.dir / name
            if not path.exists() or path.read_bytes() != data:
                path.touch(mode=0o600)
                path.write_bytes(data)

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def client_cert(self, who: Identity) -> Path:
        return self.dir / f"{who.file}.crt"

    def client_key(self, who: Identity) -> Path:
        return self.dir / f"{who.file}.key"

    def ensure(self) -> None:
        """Create whatever is missing; keep what exists (certificates survive restarts)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.ca_cert.exists():
            key = _new_key()
            name = _name("kokpit-local-ca")
            cert = (
                _builder(name, name, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(_key_usage(ca=True), critical=True)
                .sign(key, hashes.SHA256())
            )
            _write(self.ca_key, self.ca_cert, key, cert)
        ca_key, ca_cert = self._load_ca()
        if not self.serving_cert.exists():
            key = _new_key()
            sans: list[x509.GeneralName] = [x509.DNSName(d) for d in APISERVER_DNS]
            ips = dict.fromkeys((*APISERVER_IPS, *self.extra_ips))
            sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
            cert = (
                _builder(_name("kube-apiserver"), ca_cert.subject, key.public_key())
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(_key_usage(ca=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
                .sign(ca_key, hashes.SHA256())
            )
            _write(self.serving_key, self.serving_cert, key, cert)
        for who in self.clients:
            if not self.client_cert(who).exists():
                key = _new_key()
                cert = (
                    _builder(_name(who.user, who.groups), ca_cert.subject, key.public_key())
                    .add_extension(_key_usage(ca=False), critical=True)
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
                    .sign(ca_key, hashes.SHA256())
                )
                _write(self.client_key(who), self.client_cert(who), key, cert)
        if not self.sa_key.exists():
            key = _new_key()
            pub = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            self.sa_pub.write_bytes(pub)
            _write_key(self.sa_key, key)

    def _load_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.ca_key} is not an ECDSA key")
        return key, x509.load_pem_x509_certificate(self.ca_cert.read_bytes())


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _write(
    key_path: Path, cert_path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600)
    path.write_bytes(pem)
