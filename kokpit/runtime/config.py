"""How to reach and authenticate to an API server: from a kubeconfig or from inside a pod.

Credentials stay in memory (or in the files they came from); nothing here logs them, and
``repr`` of a :class:`ClientConfig` hides the token and the key.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ConfigError(ValueError):
    """The kubeconfig or in-cluster environment is missing or unusable."""


@dataclass(frozen=True)
class ClientConfig:
    """Where the API server is and how to prove who we are.

    ``qps``/``burst`` bound this client's request rate (client-go defaults to 5/10, which is
    too low for an operator managing thousands of objects; controller-runtime users commonly
    raise it to 20-100).
    """

    server: str
    ca_data: bytes | None = None
    cert_data: bytes | None = field(default=None, repr=False)
    key_data: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    #: A token file is re-read on every new connection, so rotated tokens are picked up.
    token_file: Path | None = None
    insecure_skip_tls_verify: bool = False
    qps: float = 50.0
    burst: int = 100
    user_agent: str = "kokpit"

    def bearer_token(self) -> str | None:
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS context for aiohttp (``False`` for plain HTTP)."""
        if self.server.startswith("http://"):
            return False
        ctx = ssl.create_default_context(cadata=self.ca_data.decode() if self.ca_data else None)
        if self.insecure_skip_tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_data and self.key_data:
            _load_cert_chain(ctx, self.cert_data, self.key_data)
        return ctx

    @classmethod
    def from_kubeconfig(
        cls, path: Path | str | None = None, *, context: str | None = None, **overrides: Any
    ) -> ClientConfig:
        """Load ``path`` (default ``$KUBECONFIG``, then ``~/.kube/config``)."""
        path = Path(path or os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read kubeconfig {path}: {e}") from e
        return cls.from_kubeconfig_data(
            text, context=context, base=path.parent, source=str(path), **overrides
        )

    @classmethod
    def from_kubeconfig_data(
        cls,
        text: str | bytes,
        *,
        context: str | None = None,
        base: Path | None = None,
        source: str = "data",
        **overrides: Any,
    ) -> ClientConfig:
        """A kubeconfig's contents (a business cluster's, from a Secret); relative file
        references resolve against ``base`` (default: the current directory)."""
        base = base or Path.cwd()
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse kubeconfig {source}: {e}") from e
        if not isinstance(doc, dict):
            raise ConfigError(f"cannot parse kubeconfig {source}: not a mapping")
        ctx_name = context or doc.get("current-context")
        ctx = _named(doc, "contexts", ctx_name, source)["context"]
        cluster = _named(doc, "clusters", ctx["cluster"], source)["cluster"]
        user = _named(doc, "users", ctx["user"], source).get("user") or {}
        token_file = user.get("tokenFile")
        return cls(
            server=cluster["server"].rstrip("/"),
            ca_data=_data(cluster, "certificate-authority", base),
            cert_data=_data(user, "client-certificate", base),
            key_data=_data(user, "client-key", base),
            token=user.get("token"),
            token_file=base / token_file if token_file else None,
            insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify")),
            **overrides,
        )

    @classmethod
    def in_cluster(cls, **overrides: Any) -> ClientConfig:
        """The pod's service account, as client-go's ``rest.InClusterConfig``."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host or not (IN_CLUSTER_DIR / "token").exists():
            raise ConfigError("not running in a pod (no KUBERNETES_SERVICE_HOST or token)")
        if ":" in host:
            host = f"[{host}]"
        return cls(
            server=f"https://{host}:{port}",
            ca_data=(IN_CLUSTER_DIR / "ca.crt").read_bytes(),
            token_file=IN_CLUSTER_DIR / "token",
            **overrides,
        )

    @classmethod
    def load(cls, kubeconfig: Path | str | None = None, **overrides: Any) -> ClientConfig:
        """An explicit kubeconfig, else in-cluster when in a pod, else the default kubeconfig."""
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster(**overrides)
        return cls.from_kubeconfig(kubeconfig, **overrides)


def _named(doc: dict[str, Any], section: str, name: str | None, source: str) -> dict[str, Any]:
    for entry in doc.get(section) or []:
        if entry.get("name") == name:
            found: dict[str, Any] = entry
            return found
    raise ConfigError(f"kubeconfig {source} has no {section[:-1]} named {name!r}")


def _data(section: dict[str, Any], key: str, base: Path) -> bytes | None:
    """``<key>-data`` (base64) or ``<key>`` (a file path, relative to the kubeconfig)."""
    if inline := section.get(f"{key}-data"):
        return base64.b64decode(str(inline))
    if file := section.get(key):
        return (base / str(file)).read_bytes()
    return None


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # The ssl module loads client keys only from files: write them to a private temporary
    # file that exists only for the duration of this call.
    with tempfile.NamedTemporaryFile("wb", prefix="kokpit-", suffix=".pem") as f:
        os.chmod(f.name, 0o600)
        f.write(cert + b"\n" + key)
        f.flush()
        ctx.load_cert_chain(f.name)
