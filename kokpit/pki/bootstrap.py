"""Bootstrap tokens: how a host's own kubelet first proves itself to its business cluster.

A kubelet joins by TLS bootstrap: with a short-lived bootstrap token it may do one thing, ask
for a client certificate (a CertificateSigningRequest), which the controller-manager approves
and signs; from then on it is ``system:node:<name>`` and renews its certificate itself.

The Cluster-Operator issues the token (a ``bootstrap.kubernetes.io/token`` Secret in the
business cluster's kube-system) and hands it to the Machine-Operator in a Secret of the
meta-cluster (:data:`MIRROR_KEYS`); the Machine-Operator builds the kubelet's bootstrap
kubeconfig from it (:func:`kubeconfig`). Both sides read the mirror with :func:`parse`, which
treats it as hostile: every value is checked, and no error quotes one.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

#: The group every kokpit-issued token adds (``auth-extra-groups``): the business cluster's
#: RBAC lets this group, not every bootstrapper, ask for node client certificates.
GROUP = "system:bootstrappers:kokpit:machines"
#: The type of a bootstrap token Secret (the API server authenticates with those only).
TOKEN_SECRET_TYPE = "bootstrap.kubernetes.io/token"
#: The keys of the meta-cluster's mirror Secret.
MIRROR_KEYS = ("token-id", "token-secret", "expiration", "issued", "server", "ca.crt")

_ID = re.compile(r"[a-z0-9]{6}")
_SECRET = re.compile(r"[a-z0-9]{16}")
_ALPHABET = string.ascii_lowercase + string.digits
_TIME = "%Y-%m-%dT%H:%M:%SZ"


class InvalidBootstrapToken(ValueError):
    """The mirror Secret cannot be used; the message names the key, never its value."""


@dataclass(frozen=True)
class BootstrapToken:
    """One token: ``<id>.<secret>``, valid from ``issued`` until ``expiration``."""

    token_id: str
    secret: str = field(repr=False)
    issued: datetime
    expiration: datetime

    @classmethod
    def new(cls, lifetime: timedelta, now: datetime | None = None) -> BootstrapToken:
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        return cls(_random(6), _random(16), issued, issued + lifetime)

    @staticmethod
    def secret_of(token_secret: Mapping[str, Any]) -> str | None:
        """The secret half held by a business cluster's token Secret (None if unreadable)."""
        value = (token_secret.get("data") or {}).get("token-secret")
        try:
            return base64.b64decode(str(value), validate=True).decode("ascii") if value else None
        except (ValueError, UnicodeDecodeError):
            return None

    @property
    def token(self) -> str:
        return f"{self.token_id}.{self.secret}"

    @property
    def secret_name(self) -> str:
        """The name the API server requires of the token's Secret in kube-system."""
        return f"bootstrap-token-{self.token_id}"

    def renewal_at(self, share: float) -> datetime:
        """When a successor is issued: after ``share`` of the lifetime."""
        return self.issued + (self.expiration - self.issued) * share

    def token_secret(self, description: str) -> dict[str, Any]:
        """The Secret in the business cluster's kube-system. It authenticates and nothing
        else (no ``usage-bootstrap-signing``), and the tokencleaner deletes it once it has
        expired."""
        data = {
            "token-id": self.token_id,
            "token-secret": self.secret,
            "expiration": self.expiration.strftime(_TIME),
            "usage-bootstrap-authentication": "true",
            "auth-extra-groups": GROUP,
            "description": description,
        }
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": TOKEN_SECRET_TYPE,
            "metadata": {
                "name": self.secret_name,
                "namespace": "kube-system",
                "labels": {"app.kubernetes.io/managed-by": "kokpit"},
            },
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }


@dataclass(frozen=True)
class BootstrapCredentials:
    """What a kubelet's bootstrap kubeconfig holds: the token, where the API server is, and
    the CA that signs its serving certificate."""

    token: BootstrapToken
    server: str
    ca: bytes = field(repr=False)

    def mirror(self) -> dict[str, bytes]:
        """The data of the meta-cluster's Secret (see :data:`MIRROR_KEYS`)."""
        return {
            "token-id": self.token.token_id.encode(),
            "token-secret": self.token.secret.encode(),
            "issued": self.token.issued.strftime(_TIME).encode(),
            "expiration": self.token.expiration.strftime(_TIME).encode(),
            "server": self.server.encode(),
            "ca.crt": self.ca,
        }


def parse(data: Mapping[str, Any], *, secret: str) -> BootstrapCredentials:
    """The credentials in a mirror Secret's ``data`` (base64 values), or
    :class:`InvalidBootstrapToken` naming ``secret`` and the bad key."""
    decoded: dict[str, bytes] = {}
    for key in MIRROR_KEYS:
        value = data.get(key)
        if not value:
            raise InvalidBootstrapToken(f"Secret {secret} lacks {key}")
        try:
            decoded[key] = base64.b64decode(str(value), validate=True)
        except ValueError:
            raise InvalidBootstrapToken(f"Secret {secret}: {key} is not base64") from None
    text: dict[str, str] = {}
    for key in ("token-id", "token-secret", "issued", "expiration", "server"):
        try:
            text[key] = decoded[key].decode("ascii")
        except UnicodeDecodeError:
            raise InvalidBootstrapToken(f"Secret {secret}: {key} is not ASCII text") from None
    if not _ID.fullmatch(text["token-id"]) or not _SECRET.fullmatch(text["token-secret"]):
        raise InvalidBootstrapToken(f"Secret {secret}: the token is not a bootstrap token")
    times: dict[str, datetime] = {}
    for key in ("issued", "expiration"):
        try:
            times[key] = datetime.strptime(text[key], _TIME).replace(tzinfo=UTC)
        except ValueError:
            raise InvalidBootstrapToken(
                f"Secret {secret}: {key} is not a time such as 2026-01-02T15:04:05Z"
            ) from None
    server = urlsplit(text["server"])
    if server.scheme != "https" or not server.hostname or server.path not in ("", "/"):
        raise InvalidBootstrapToken(f"Secret {secret}: server is not an https:// URL of a host")
    if server.query or server.fragment or server.username or server.password:
        raise InvalidBootstrapToken(f"Secret {secret}: server is not an https:// URL of a host")
    try:
        x509.load_pem_x509_certificates(decoded["ca.crt"])
    except ValueError:
        raise InvalidBootstrapToken(f"Secret {secret}: ca.crt is not PEM certificates") from None
    token = BootstrapToken(
        text["token-id"], text["token-secret"], times["issued"], times["expiration"]
    )
    return BootstrapCredentials(token, text["server"], decoded["ca.crt"])


def kubeconfig(credentials: BootstrapCredentials, *, cluster_name: str) -> str:
    """The kubelet's ``--bootstrap-kubeconfig``: the token as the user's bearer token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {
                    "server": credentials.server,
                    "certificate-authority-data": base64.b64encode(credentials.ca).decode(),
                },
            }
        ],
        "users": [{"name": "kubelet-bootstrap", "user": {"token": credentials.token.token}}],
        "contexts": [
            {
                "name": cluster_name,
                "context": {"cluster": cluster_name, "user": "kubelet-bootstrap"},
            }
        ],
        "current-context": cluster_name,
    }
    return json.dumps(config, indent=2) + "\n"


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))
