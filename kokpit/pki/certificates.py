"""Certificates and keys of a control plane: the local meta-cluster's and each business cluster's.

One self-signed CA per cluster signs the kube-apiserver serving certificate and one client
certificate per identity (the admin, the controller-manager, the scheduler, kwok). The
kube-apiserver's x509 authenticator maps a certificate's CN to the user and its O entries to
groups, so RBAC sees ``system:kube-controller-manager`` and ``system:kube-scheduler`` just as
on a kubeadm cluster. A separate key pair signs service-account tokens. Keys are ECDSA P-256:
as strong as RSA-3072 for this purpose and generated in milliseconds.

Lifetimes. Leaf certificates live :data:`LEAF_VALIDITY` (90 days) and :meth:`PKI.ensure`
renews one that has less than a third of its life left, so a leaked leaf key is useful for
weeks, not a decade. The CA lives :data:`CA_VALIDITY` (10 years): it is the trust anchor baked
into every kubeconfig, Secret and client of the cluster, so replacing it means redistributing
it everywhere; its key stays in the cluster's PKI Secret (and with the one component that signs
with it, below) and never travels in a kubeconfig, so a long life is the usual trade (kubeadm
makes the same one).

Identity. Each CA's subject names its cluster (:attr:`PKI.cluster`: a business cluster's
``namespace/name``) and carries a unique serial-number attribute (the Cluster's uid, else
random), so two clusters' CAs are never confused by subject; every certificate has a
SubjectKeyIdentifier and every leaf an AuthorityKeyIdentifier equal to its CA's, so chains are
built by key, not by name. Leaves are not CAs (BasicConstraints critical), sign only
(digitalSignature: ECDHE needs nothing else of an EC key) and are either for serving
(serverAuth) or for clients (clientAuth), never both.

What each component gets (:data:`MATERIAL`), from the flags in :mod:`kokpit.local.components`:

====================== ============================================ =============================
component              PKI files                                    why
====================== ============================================ =============================
etcd                   none (the kubernetes runtime: see below)     serves plain HTTP on loopback
                                                                    (process runtime, local)
kube-apiserver         apiserver.crt/.key, ca.crt, sa.pub, sa.key   serving; ``--client-ca-file``;
                                                                    verifies and (``--service-
                                                                    account-signing-key-file``)
                                                                    issues service-account tokens
kube-controller-       ca.crt, ca.key, sa.key, and its kubeconfig   ``--root-ca-file``; the
manager                (its client cert/key inside)                 csrsigning controller signs
                                                                    kubelet CSRs with ``--cluster-
                                                                    signing-cert/key-file``;
                                                                    ``--service-account-private-
                                                                    key-file`` (legacy tokens)
kube-scheduler         its kubeconfig only                          talks to kube-apiserver only
kwok (local only)      its kubeconfig only                          idem
====================== ============================================ =============================

The kubernetes runtime mounts exactly these (Secret ``items``), plus etcd's TLS material
(:data:`ETCD_MATERIAL`). The process runtime writes them once per cluster into one directory:
its components run as one user on one host, so separate files per component would separate
nothing there.

etcd of the kubernetes runtime (:attr:`PKI.etcd_dns`). There etcd is reachable over the pod
network, so it serves TLS only and requires client certificates, from a CA of its own
(``etcd-ca``, as kubeadm does): the cluster CA also signs kubelet and user certificates (the
controller-manager's csrsigning controller holds its key), and none of those may open etcd.
``etcd-server`` serves clients, ``etcd-peer`` serves and dials the other members; both carry
serverAuth *and* clientAuth (the one exception to "never both": etcd's gRPC gateway dials its
own client port with the server certificate, and every member is a peer's client and server).
``apiserver-etcd-client`` is the only client. The process runtime's etcd listens on loopback
of the operator's host, in plain HTTP, and reads none of it.

A serving certificate that does not name every address wanted now (:attr:`PKI.dns_names`, a
name added by a newer kokpit) is due like one near its end: it is re-issued and rolled out.

Files are written once and reused, so certificates survive ``down``/``up``; every
:meth:`PKI.ensure` and :meth:`PKI.write` sets the modes again (keys 0600, the rest 0644), since
a mode someone loosened is not fixed by leaving an existing file alone.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: How long the CA is valid (see the module docstring for why it is long).
CA_VALIDITY = dt.timedelta(days=3650)
#: How long serving and client certificates are valid by default.
LEAF_VALIDITY = dt.timedelta(days=90)
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
#: CoreDNS of the local meta-cluster's real node (:mod:`kokpit.local.dns`): reads Services,
#: EndpointSlices, Pods and Namespaces, as RBAC binds it, and nothing else.
COREDNS = Identity("coredns", "kokpit:coredns")
CLIENTS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KWOK, COREDNS)
#: kokpit's Machine-Operator inside a business cluster: no group, so RBAC sees only the user
#: and grants only what the Cluster-Operator binds to it (the admin kubeconfig is for people).
MACHINE_OPERATOR = Identity("machine-operator", "kokpit:machine-operator")

#: The PKI files each component reads (kubeconfigs aside), by the flags of
#: :mod:`kokpit.local.components`; the table in the module docstring says why.
MATERIAL: dict[str, tuple[str, ...]] = {
    "etcd": (),
    "kube-apiserver": ("apiserver.crt", "apiserver.key", "ca.crt", "sa.pub", "sa.key"),
    "kube-controller-manager": ("ca.crt", "ca.key", "sa.key"),
    "kube-scheduler": (),
    "kwok": (),
}
#: What etcd's TLS adds in the kubernetes runtime (see the module docstring): etcd's own
#: serving and peer pairs and the CA it trusts, and kube-apiserver's client pair. Not
#: ``etcd-ca.key``: only the Cluster-Operator signs with it.
ETCD_MATERIAL: dict[str, tuple[str, ...]] = {
    "etcd": (
        "etcd-ca.crt",
        "etcd-server.crt",
        "etcd-server.key",
        "etcd-peer.crt",
        "etcd-peer.key",
    ),
    "kube-apiserver": ("etcd-ca.crt", "apiserver-etcd-client.crt", "apiserver-etcd-client.key"),
}
#: The file stem of kube-apiserver's etcd client certificate (etcd checks its chain, not its
#: subject, which is ``kube-apiserver-etcd-client`` as with kubeadm).
ETCD_CLIENT = "apiserver-etcd-client"


@dataclass(frozen=True)
class PKI:
    """Paths of the PEM files in a cluster's ``pki/`` directory."""

    dir: Path
    #: Client certificates to issue.
    clients: tuple[Identity, ...] = CLIENTS
    #: Addresses the serving certificate is valid for besides :data:`APISERVER_IPS` (a
    #: business cluster's first Service IP, say).
    extra_ips: tuple[str, ...] = ()
    #: Whose CA this is, named in its subject (a business cluster's ``namespace/name``).
    cluster: str = "local meta-cluster"
    #: Unique per cluster, in the CA subject's serial-number attribute: the Cluster's uid
    #: (empty: a random one, drawn when the CA is created).
    cluster_uid: str = ""
    #: Lifetime of the serving and client certificates issued from now on.
    leaf_validity: dt.timedelta = LEAF_VALIDITY
    #: DNS names the serving certificate is valid for besides :data:`APISERVER_DNS` (a
    #: business cluster's Service names in the meta-cluster).
    dns_names: tuple[str, ...] = ()
    #: DNS names etcd's serving and peer certificates are valid for; empty: no etcd TLS
    #: material at all (the local meta-cluster, whose etcd is on loopback).
    etcd_dns: tuple[str, ...] = ()

    def material(self) -> dict[str, bytes]:
        """Every PEM file by name: what a business cluster keeps in its Secret."""
        return {p.name: p.read_bytes() for p in sorted(self.dir.glob("*.*")) if p.is_file()}

    def write(self, material: dict[str, bytes]) -> None:
        """Make the directory hold exactly ``material`` (PEM files from a Secret): write what
        differs, remove what is not in it, and set every file's mode (keys 0600)."""
        if any((self.dir / name).parent != self.dir for name in material):
            raise ValueError("a PKI file name is a plain file name")
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in self.dir.iterdir():  # the directory holds this material, no more
            if stale.name not in material and (stale.is_file() or stale.is_symlink()):
                stale.unlink()
        for name, data in material.items():
            path = self.dir / name
            if path.is_symlink():
                path.unlink()
            if not path.exists() or path.read_bytes() != data:
                path.touch(mode=0o600)
                path.chmod(0o600)  # private while written, whatever it was before
                path.write_bytes(data)
        self._set_modes()

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

    def pair(self, stem: str) -> tuple[Path, Path]:
        """The key and certificate of ``stem`` (``etcd-server``: etcd-server.key/.crt)."""
        return self.dir / f"{stem}.key", self.dir / f"{stem}.crt"

    def _serving_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        dns = tuple(dict.fromkeys((*APISERVER_DNS, *self.dns_names)))
        return dns, tuple(dict.fromkeys((*APISERVER_IPS, *self.extra_ips)))

    def _leaves(self) -> list[Path]:
        etcd = [self.pair(s)[1] for s in ETCD_LEAVES] if self.etcd_dns else []
        return [self.serving_cert, *map(self.client_cert, self.clients), *etcd]

    def ensure(self) -> None:
        """Create whatever is missing, renew leaves near their end (see :meth:`due`), keep the
        rest (certificates survive restarts), and set every file's mode."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.ca_cert.exists():
            key = _new_key()
            name = _ca_name(self.cluster, self.cluster_uid or secrets.token_hex(16))
            _write(self.ca_key, self.ca_cert, key, _ca_certificate(name, key))
        ca_key, ca_cert = self._load_ca()
        dns, ips = self._serving_names()
        if self.due(self.serving_cert, dns, ips):
            self._issue(
                ca_key,
                ca_cert,
                _name("kube-apiserver"),
                (ExtendedKeyUsageOID.SERVER_AUTH,),
                (self.serving_key, self.serving_cert),
                _sans(dns, ips),
            )
        for who in self.clients:
            if self.due(self.client_cert(who)):
                self._issue(
                    ca_key,
                    ca_cert,
                    _name(who.user, who.groups),
                    (ExtendedKeyUsageOID.CLIENT_AUTH,),
                    (self.client_key(who), self.client_cert(who)),
                )
        if self.etcd_dns:
            self._ensure_etcd()
        if not self.sa_key.exists():
            key = _new_key()
            pub = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            self.sa_pub.write_bytes(pub)
            _write_key(self.sa_key, key)
        self._set_modes()

    def _ensure_etcd(self) -> None:
        """etcd's own CA, its serving and peer certificates, and kube-apiserver's client
        certificate (see the module docstring)."""
        ca_key_path, ca_cert_path = self.pair("etcd-ca")
        if not ca_cert_path.exists():
            key = _new_key()
            name = _ca_name(f"etcd {self.cluster}", self.cluster_uid or secrets.token_hex(16))
            _write(ca_key_path, ca_cert_path, key, _ca_certificate(name, key))
        ca_key, ca_cert = self._load_ca(ca_key_path, ca_cert_path)
        both = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
        dns = tuple(dict.fromkeys((*self.etcd_dns, "localhost")))
        ips = ("127.0.0.1",)
        for stem in ETCD_LEAVES:
            paths = self.pair(stem)
            if stem == ETCD_CLIENT:
                if self.due(paths[1]):
                    usage = (ExtendedKeyUsageOID.CLIENT_AUTH,)
                    self._issue(ca_key, ca_cert, _name(f"kube-{stem}"), usage, paths)
            elif self.due(paths[1], dns, ips):
                self._issue(ca_key, ca_cert, _name(stem), both, paths, _sans(dns, ips))

    def renewal_in(self) -> float:
        """Seconds until the first leaf is due for renewal (0 if one is due now)."""
        now = dt.datetime.now(dt.UTC)
        soonest = min(
            x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
            - self.leaf_validity / 3
            - now
            for path in self._leaves()
        )
        return max(0.0, soonest.total_seconds())

    def due(self, cert_path: Path, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> bool:
        """Whether the leaf at ``cert_path`` must be (re)issued: missing, with less than a
        third of :attr:`leaf_validity` left, or (a serving certificate) not valid for one of
        the names ``dns`` and addresses ``ips`` wanted now."""
        if not cert_path.exists():
            return True
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
        return left < self.leaf_validity / 3 or not _names_all(cert, dns, ips)

    def _issue(
        self,
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        subject: x509.Name,
        usages: tuple[x509.ObjectIdentifier, ...],
        paths: tuple[Path, Path],
        sans: x509.SubjectAlternativeName | None = None,
    ) -> None:
        """A new key and a leaf certificate for ``usages`` (serverAuth or clientAuth; both
        only for etcd, see the module docstring)."""
        key = _new_key()
        builder = (
            _builder(subject, ca_cert.subject, key.public_key(), self.leaf_validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(_authority_key_id(ca_cert), critical=False)
        )
        if sans is not None:
            builder = builder.add_extension(sans, critical=False)
        _write(*paths, key, builder.sign(ca_key, hashes.SHA256()))

    def _set_modes(self) -> None:
        """Keys 0600, certificates and the public key 0644, the directory 0700."""
        self.dir.chmod(0o700)
        for path in self.dir.iterdir():
            if path.is_file() and not path.is_symlink():
                path.chmod(0o600 if path.suffix == ".key" else 0o644)

    def _load_ca(
        self, key_path: Path | None = None, cert_path: Path | None = None
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key_path, cert_path = key_path or self.ca_key, cert_path or self.ca_cert
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an ECDSA key")
        return key, x509.load_pem_x509_certificate(cert_path.read_bytes())


#: etcd's leaf certificates (key and certificate files named after them).
ETCD_LEAVES = ("etcd-server", "etcd-peer", ETCD_CLIENT)


def issue_client(
    ca_cert: bytes, ca_key: bytes, who: Identity, validity: dt.timedelta = LEAF_VALIDITY
) -> tuple[bytes, bytes]:
    """A client certificate for ``who`` signed by a cluster's CA (PEM ``ca_cert`` and
    ``ca_key``), in memory: (certificate, key) as PEM. For identities that are not one of a
    PKI's files (a node agent's: one per node, issued on demand, never stored by kokpit)."""
    ca = x509.load_pem_x509_certificate(ca_cert)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    if not isinstance(signer, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key (kokpit's CAs are P-256)")
    key = _new_key()
    cert = (
        _builder(_name(who.user, who.groups), ca.subject, key.public_key(), validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(_authority_key_id(ca), critical=False)
        .sign(signer, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem


def _ca_certificate(name: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return (
        _builder(name, name, key.public_key(), CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )


def _sans(dns: tuple[str, ...], ips: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    return x509.SubjectAlternativeName(names)


def _names_all(cert: x509.Certificate, dns: tuple[str, ...], ips: tuple[str, ...]) -> bool:
    """Whether ``cert``'s subject alternative names hold every one of ``dns`` and ``ips``."""
    if not dns and not ips:
        return True
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    has_dns = set(sans.get_values_for_type(x509.DNSName))
    has_ips = {str(a) for a in sans.get_values_for_type(x509.IPAddress)}
    return set(dns) <= has_dns and {str(ipaddress.ip_address(a)) for a in ips} <= has_ips


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _authority_key_id(ca: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The CA's SubjectKeyIdentifier as a leaf's AuthorityKeyIdentifier (a CA made before
    kokpit set SKIs has none: then the same hash of its public key)."""
    try:
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(_ec_public(ca))
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _ec_public(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the CA certificate does not hold an ECDSA key")
    return key


def _ca_name(cluster: str, unique: str) -> x509.Name:
    """The CA's subject: its cluster (cut to the 64 characters X.509 allows a CN) and a
    value unique to it."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kokpit"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"kokpit CA {cluster}"[:64]),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, unique[:64]),
        ]
    )


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    validity: dt.timedelta,
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,  # for RSA key transport; an EC key never encrypts
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
    path.chmod(0o600)  # before the key is in it, whatever the file's mode was
    path.write_bytes(pem)
