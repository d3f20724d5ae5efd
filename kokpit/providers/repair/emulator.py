"""A Redfish BMC on this machine: sushy-tools' emulator, for the tests and the demo.

The BMC repairs (:mod:`kokpit.providers.repair.redfish`) are tested against a real Redfish
service, not a fake of sushy: ``sushy-emulator`` (the ``sushy-tools`` package, a dev
dependency) run as its own process, as a BMC would be. It runs its *fake* systems driver (no
libvirt, no OpenStack): each system is a record in the emulator's state directory whose power
state, boot override and virtual media change as a real one's would, power changes landing
1 to 11 s after they are asked for (as on hardware, they are not immediate).

It serves TLS with a certificate from a CA of its own (:class:`LocalCA`; its PEM is what a
Machine's ``spec.bmc.caBundle`` holds) and requires HTTP basic authentication (an htpasswd file
of bcrypt digests, written here with the ``bcrypt`` package sushy-tools itself uses, so no
Apache tools are needed). It listens on a free port of 127.0.0.1.

Virtual media: the emulator downloads the image it is given (as a BMC fetches an installer),
into its own temporary directory; the image URL must answer (tests serve one with
:mod:`kokpit.providers.repair.receiver`).

Should pytest die without tearing down, the kernel kills the emulator (``PR_SET_PDEATHSIG``,
which follows the thread that started it: start it from the main thread).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as dt
import ipaddress
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

START_TIMEOUT = 30.0
LISTEN_ADDRESS = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
#: A line of the emulator's access log (werkzeug's, colour codes around failed requests).
_ACCESS = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (\S+) HTTP/[0-9.]+(?:\x1b\[[0-9;]*m)*" (\d{3})')
_LIBC = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class LocalCA:
    """A throwaway certificate authority: signs the serving certificates of the test BMC and the
    test webhook receiver. Its :attr:`pem` is what a caBundle holds to trust them."""

    pem: str
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def create(cls, name: str) -> LocalCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM).decode(), key)

    def issue_server(
        self, directory: Path, *, hosts: tuple[str, ...] = (LISTEN_ADDRESS, "localhost")
    ) -> tuple[Path, Path]:
        """A serving certificate for ``hosts`` (IP addresses or DNS names), written with its
        key (0600) under ``directory``; returns (certificate, key) paths."""
        ca = x509.load_pem_x509_certificate(self.pem.encode())
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_path, key_path = directory / "server.crt", directory / "server.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context trusting this CA only."""
        return ssl.create_default_context(cadata=self.pem)


@dataclass(frozen=True)
class FakeSystem:
    """One system of the emulator's fake driver."""

    name: str
    uuid: str
    #: Its power state when the emulator starts first.
    power_state: str = "On"

    @property
    def path(self) -> str:
        """The Redfish System path: a Machine's ``spec.bmc.systemID``."""
        return f"/redfish/v1/Systems/{self.uuid}"


class RedfishEmulator:
    """``sushy-emulator`` as a process: TLS from :attr:`ca`, basic auth as :attr:`username` /
    :attr:`password`, the fake driver with :attr:`systems`. :meth:`start`, :meth:`stop`."""

    def __init__(
        self,
        directory: Path,
        *,
        systems: int = 4,
        username: str = "admin",
        password: str | None = None,
        ca: LocalCA | None = None,
    ) -> None:
        self.directory = directory
        self.ca = ca or LocalCA.create("kokpit test BMC CA")
        self.username = username
        self.password = password or base64.b32encode(uuid.uuid4().bytes).decode().rstrip("=")
        self.systems = [FakeSystem(f"system-{i}", str(uuid.uuid4())) for i in range(systems)]
        self.port = 0
        self.log = directory / "emulator.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The Redfish service's base URL: a Machine's ``spec.bmc.address``."""
        return f"https://{LISTEN_ADDRESS}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def bmc(self, system: FakeSystem, secret: str, **extra: Any) -> dict[str, Any]:
        """A Machine's ``spec.bmc`` for ``system`` (its CA in caBundle), credentials in the
        Secret ``secret``; ``extra`` adds or overrides fields (camelCase)."""
        spec: dict[str, Any] = {
            "address": self.address,
            "systemID": system.path,
            "credentialsSecretRef": {"name": secret},
            "caBundle": self.ca.pem,
        }
        spec.update(extra)
        return spec

    def secret_data(
        self, *, username: str | None = None, password: str | None = None
    ) -> dict[str, str]:
        """The ``data`` of a credentials Secret (base64 values) logging in here, or with
        another ``username``/``password``."""
        values = {
            "username": self.username if username is None else username,
            "password": self.password if password is None else password,
        }
        return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}

    def start(self) -> None:
        """Start the emulator and wait until it serves Redfish over TLS."""
        if self.running:
            return
        config = self._write_config()
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "sushy_tools.emulator.main", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={"TMPDIR": str(self.directory / "tmp"), "PATH": "/usr/bin:/bin"},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"sushy-emulator exited: {self.log.read_text()[-4000:]}")
            with contextlib.suppress(OSError):
                self.get("/redfish/v1/")
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"sushy-emulator did not serve within {START_TIMEOUT} s")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def get(self, path: str) -> dict[str, Any]:
        """GET a Redfish resource as the admin, verifying TLS with :attr:`ca`: how tests look
        at what a repair did, without sushy."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.address}{path}", headers={"Authorization": f"Basic {token}"}
        )
        with urllib.request.urlopen(request, timeout=10, context=self.ca.client_context()) as r:
            document: dict[str, Any] = json.load(r)
        return document

    def post(self, path: str, body: dict[str, Any]) -> None:
        """POST a Redfish action as the admin (a test putting a system in a given state)."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.address}{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.ca.client_context()):
                pass
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"POST {path}: {e.code} {e.read()[:1000]!r}") from None

    def requests(self) -> list[tuple[str, str, int]]:
        """The requests the emulator answered so far, oldest first: (method, path, status),
        from its access log. Tests count the resets a repair sent with it."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [(m[1], m[2], int(m[3])) for m in _ACCESS.finditer(text)]

    def _write_config(self) -> Path:
        import bcrypt  # sushy-tools' own dependency (dev extra): only where an emulator runs

        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.directory / "tmp").mkdir(exist_ok=True, mode=0o700)
        (self.directory / "state").mkdir(exist_ok=True, mode=0o700)
        cert, key = self.ca.issue_server(self.directory / "tls")
        htpasswd = self.directory / "htpasswd"
        digest = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd.write_text(f"{self.username}:{digest}\n")
        if not self.port:
            self.port = _free_port()
        systems = [
            {
                "uuid": s.uuid,
                "name": s.name,
                "power_state": s.power_state,
                "nics": [{"mac": f"00:5c:52:31:3a:{i:02x}", "ip": f"172.22.0.{100 + i}"}],
            }
            for i, s in enumerate(self.systems)
        ]
        settings = {
            "SUSHY_EMULATOR_LISTEN_IP": LISTEN_ADDRESS,
            "SUSHY_EMULATOR_LISTEN_PORT": self.port,
            "SUSHY_EMULATOR_SSL_CERT": str(cert),
            "SUSHY_EMULATOR_SSL_KEY": str(key),
            "SUSHY_EMULATOR_AUTH_FILE": str(htpasswd),
            "SUSHY_EMULATOR_FAKE_DRIVER": True,
            "SUSHY_EMULATOR_FAKE_SYSTEMS": systems,
            "SUSHY_EMULATOR_STATE_DIR": str(self.directory / "state"),
        }
        config = self.directory / "emulator.conf"
        # The emulator reads its configuration as a Python file: each value as a literal.
        config.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
        return config


def start_emulator(directory: Path, *, systems: int = 4) -> RedfishEmulator:
    """An emulator with ``systems`` fake systems, started; stop it with ``stop()``."""
    emulator = RedfishEmulator(directory, systems=systems)
    emulator.start()
    return emulator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LISTEN_ADDRESS, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
