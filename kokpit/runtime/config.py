"""How to reach and authenticate to an API server: from a kubeconfig or from inside a pod.

Two kinds of kubeconfig, two levels of trust. One the operator's admin chose (a file,
:meth:`ClientConfig.from_kubeconfig`) may name token, certificate and key files relative to
itself, use plain HTTP or skip TLS verification, as kubectl allows. One held in an object
(:meth:`ClientConfig.from_kubeconfig_data`, a business cluster's kubeconfig from a Secret) is
written by whoever can edit that object: if it could name a file, ``tokenFile:
/var/run/secrets/kubernetes.io/serviceaccount/token`` and a ``server`` of its choosing would
hand it the operator's own token. So that one is *inline only*: credentials and CA as
``*-data``, ``https://`` with a CA, verification on, no plugins, no proxy. Both share one parser
(:func:`_parse`); what differs is only how the cluster and user entries become a config
(:func:`_from_files` or :func:`_inline_only`).

Credentials stay in memory (or in the files they came from); nothing here logs them. ``repr``
of a :class:`ClientConfig` hides the token, the key and the certificates, and no
:class:`ConfigError` quotes a kubeconfig's text: messages name the field (its path in the
document), never its value, and a YAML syntax error gives a line and column, not the excerpt of
the document that PyYAML's own message carries.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The address of a host name, or None to ask DNS (see :mod:`kokpit.runtime.services`).
Resolve = Callable[[str], Awaitable[str | None]]

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
    ca_data: bytes | None = field(default=None, repr=False)
    cert_data: bytes | None = field(default=None, repr=False)
    key_data: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    #: A token file is re-read on every new connection, so rotated tokens are picked up.
    token_file: Path | None = None
    insecure_skip_tls_verify: bool = False
    qps: float = 50.0
    burst: int = 100
    user_agent: str = "kokpit"
    #: How to find the address of a host name before asking DNS (None: DNS only); see
    #: :mod:`kokpit.runtime.services`. TLS verifies the certificate for the URL's name either way.
    resolve: Resolve | None = field(default=None, repr=False, compare=False)

    def bearer_token(self) -> str | None:
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS context for aiohttp (``False`` for plain HTTP).

        With a CA given, only that CA is trusted (not the system's). Unusable material is a
        :class:`ConfigError` that says which, without the OpenSSL text (which never holds key
        bytes, but need not be relied on for that).
        """
        if self.server.startswith("http://"):
            return False
        try:
            cadata = self.ca_data.decode("ascii") if self.ca_data else None
            ctx = ssl.create_default_context(cadata=cadata)
        except (ValueError, ssl.SSLError):
            raise ConfigError("the certificate authority is not a PEM certificate") from None
        if self.insecure_skip_tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_data and self.key_data:
            try:
                _load_cert_chain(ctx, self.cert_data, self.key_data)
            except (ValueError, ssl.SSLError):
                message = "the client certificate and key are not a matching PEM pair"
                raise ConfigError(message) from None
        return ctx

    @classmethod
    def from_kubeconfig(
        cls, path: Path | str | None = None, *, context: str | None = None, **overrides: Any
    ) -> ClientConfig:
        """Load ``path`` (default ``$KUBECONFIG``, then ``~/.kube/config``), a file the
        operator's admin chose: file references (relative to it), plain HTTP and skipped TLS
        verification are honoured as kubectl does."""
        path = Path(path or os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read kubeconfig {path}: {e}") from e
        cluster, user = _parse(text, context, source=str(path))
        return cls(**_from_files(cluster, user, path.parent, f"kubeconfig {path}"), **overrides)

    @classmethod
    def from_kubeconfig_data(
        cls,
        text: str | bytes,
        *,
        context: str | None = None,
        source: str = "data",
        **overrides: Any,
    ) -> ClientConfig:
        """A kubeconfig held in an object (a business cluster's, from a Secret): inline only.

        Refused, with a :class:`ConfigError` naming the field: any file reference
        (``tokenFile``, ``client-certificate``, ``client-key``, ``certificate-authority``),
        ``exec`` and ``auth-provider`` plugins, ``username``/``password``, impersonation,
        ``insecure-skip-tls-verify: true``, ``proxy-url``, ``tls-server-name``, a ``server``
        that is not ``https://``, and a missing ``certificate-authority-data``. Any field not
        known to be harmless is refused too, rather than silently ignored: an ignored field is
        a setting its writer believes in and the connection does not have.

        ``tls-server-name`` is refused although the CA comes from the same object: verifying
        the certificate for another name than the one connected to is exactly the kind of
        quiet divergence that lets a misdirected ``server`` pass, kokpit's own kubeconfigs
        never need it, and :class:`ClientConfig` cannot honour it.
        """
        where = f"kubeconfig {source}"
        cluster, user = _parse(text, context, source=source)
        config = cls(**_inline_only(cluster, user, where), **overrides)
        try:
            config.ssl_context()  # unusable material is an error now, not at the first request
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        return config

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


@dataclass(frozen=True)
class _Entry:
    """A kubeconfig's ``cluster`` or ``user`` mapping and where it sits in the document
    (``users[0].user``): messages name a field by its path, never by its value."""

    at: str
    fields: dict[str, Any]

    def path(self, key: str) -> str:
        return f"{self.at}.{key}"


def _parse(text: str | bytes, context: str | None, *, source: str) -> tuple[_Entry, _Entry]:
    """The cluster and user entries of ``context`` (default: the current context).

    Every error names a position or a field path, never a value: the text may be a Secret's.
    """
    where = f"kubeconfig {source}"
    try:
        doc = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"cannot parse {where}: not valid YAML{at}") from None
    except yaml.reader.ReaderError as e:
        raise ConfigError(f"cannot parse {where}: not UTF-8 text (byte {e.position})") from None
    except yaml.YAMLError:
        raise ConfigError(f"cannot parse {where}: not valid YAML") from None
    except RecursionError:  # a document nested deeper than the parser's stack
        raise ConfigError(f"cannot parse {where}: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"cannot parse {where}: not a mapping")
    if context is None:
        context, context_at = doc.get("current-context"), "current-context"
        if not isinstance(context, str) or not context:
            raise ConfigError(f"{where} has no current-context")
    else:
        context_at = "the requested context"
    ctx = _named(doc, "contexts", context, where, context_at)
    cluster = _named(doc, "clusters", ctx.fields.get("cluster"), where, ctx.path("cluster"))
    user = _named(doc, "users", ctx.fields.get("user"), where, ctx.path("user"))
    return cluster, user


def _named(doc: dict[str, Any], section: str, name: object, where: str, by: str) -> _Entry:
    """The entry of ``section`` called ``name`` (which ``by`` gives), as an :class:`_Entry`."""
    entries = doc.get(section) or []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: {section} is not a list")
    inner = section[:-1]  # "clusters" -> "cluster"
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get("name") == name and isinstance(name, str):
            at = f"{section}[{i}].{inner}"
            fields = entry.get(inner) or {}
            if not isinstance(fields, dict):
                raise ConfigError(f"{where}: {at} is not a mapping")
            return _Entry(at, fields)
    raise ConfigError(f"{where}: {by} names no entry of {section}")


def _from_files(cluster: _Entry, user: _Entry, base: Path, where: str) -> dict[str, Any]:
    """The permissive reading, as kubectl's: file references resolve against ``base``."""
    c, u = cluster.fields, user.fields
    server = c.get("server")
    if not isinstance(server, str) or not server:
        raise ConfigError(f"{where}: {cluster.path('server')} is missing")
    token_file = u.get("tokenFile")
    return {
        "server": server.rstrip("/"),
        "ca_data": _data(cluster, "certificate-authority", base, where),
        "cert_data": _data(user, "client-certificate", base, where),
        "key_data": _data(user, "client-key", base, where),
        "token": u.get("token"),
        "token_file": base / str(token_file) if token_file else None,
        "insecure_skip_tls_verify": bool(c.get("insecure-skip-tls-verify")),
    }


#: Fields of an object's kubeconfig that are refused, and why (a person reads this).
_REFUSED = {
    "tokenFile": "names a file",
    "client-certificate": "names a file",
    "client-key": "names a file",
    "certificate-authority": "names a file",
    "exec": "runs a credential plugin",
    "auth-provider": "runs an auth-provider plugin",
    "username": "is basic authentication, which kokpit does not send",
    "password": "is basic authentication, which kokpit does not send",
    "as": "asks for impersonation, which kokpit does not do",
    "as-uid": "asks for impersonation, which kokpit does not do",
    "as-groups": "asks for impersonation, which kokpit does not do",
    "as-user-extra": "asks for impersonation, which kokpit does not do",
    "proxy-url": "sends the connection through a proxy",
    "tls-server-name": "verifies the server certificate for another name than the server's",
}
#: Fields of an object's kubeconfig that are read (or harmless and ignored); any other is
#: refused.
_CLUSTER_FIELDS = frozenset(
    {"server", "certificate-authority-data", "insecure-skip-tls-verify", "extensions"}
    | {"disable-compression"}
)
_USER_FIELDS = frozenset({"token", "client-certificate-data", "client-key-data", "extensions"})


def _inline_only(cluster: _Entry, user: _Entry, where: str) -> dict[str, Any]:
    """The strict reading, for a kubeconfig held in an object: see
    :meth:`ClientConfig.from_kubeconfig_data`."""
    for entry, allowed in ((cluster, _CLUSTER_FIELDS), (user, _USER_FIELDS)):
        for name in entry.fields:
            if not isinstance(name, str):
                raise ConfigError(f"{where}: {entry.at} has a field whose name is not text")
            if name in _REFUSED:
                raise ConfigError(
                    f"{where}: {entry.path(name)} is refused: it {_REFUSED[name]}; a kubeconfig "
                    "from an object carries its credentials and CA inline (the *-data fields)"
                )
            if name not in allowed:
                # Not named: an unknown field's name is as much the object's text as a value.
                known = ", ".join(sorted(allowed))
                raise ConfigError(f"{where}: {entry.at} has a field other than {known}")
    c, u = cluster.fields, user.fields
    if c.get("insecure-skip-tls-verify") not in (None, False):
        raise ConfigError(
            f"{where}: {cluster.path('insecure-skip-tls-verify')} is refused: "
            "TLS verification cannot be switched off for a kubeconfig from an object"
        )
    server = _https_server(cluster, where)
    ca = _inline(cluster, "certificate-authority-data", where)
    if ca is None:
        raise ConfigError(
            f"{where}: {cluster.path('certificate-authority-data')} is required: "
            "the server's CA must be given inline"
        )
    cert = _inline(user, "client-certificate-data", where)
    key = _inline(user, "client-key-data", where)
    if (cert is None) != (key is None):
        raise ConfigError(
            f"{where}: {user.at} needs both client-certificate-data and client-key-data, or neither"
        )
    token = u.get("token")
    if token is not None and not _is_bearer_token(token):
        raise ConfigError(f"{where}: {user.path('token')} is not a bearer token")
    return {"server": server, "ca_data": ca, "cert_data": cert, "key_data": key, "token": token}


def _https_server(cluster: _Entry, where: str) -> str:
    at = cluster.path("server")
    server = cluster.fields.get("server")
    if not isinstance(server, str) or not server:
        raise ConfigError(f"{where}: {at} is missing")
    try:
        url = urllib.parse.urlsplit(server)
        _ = url.port  # raises on a port that is not a number in range
    except ValueError:
        raise ConfigError(f"{where}: {at} is not a URL") from None
    if url.scheme != "https" or not url.hostname:
        raise ConfigError(f"{where}: {at} must be an https:// URL with a host")
    if url.username is not None or url.password is not None or url.query or url.fragment:
        raise ConfigError(f"{where}: {at} may not carry user information, a query or a fragment")
    return server.rstrip("/")


def _inline(entry: _Entry, key: str, where: str) -> bytes | None:
    """``<key>`` of ``entry``, base64-decoded; None when absent or empty."""
    value = entry.fields.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {entry.path(key)} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: {entry.path(key)} is not base64 text") from None


def _is_bearer_token(token: object) -> bool:
    """Printable ASCII without spaces: nothing that could split or extend an HTTP header."""
    return isinstance(token, str) and bool(token) and all(33 <= ord(ch) <= 126 for ch in token)


def _data(entry: _Entry, key: str, base: Path, where: str) -> bytes | None:
    """``<key>-data`` (base64) or ``<key>`` (a file path, relative to the kubeconfig)."""
    section = entry.fields
    if inline := section.get(f"{key}-data"):
        try:
            return base64.b64decode(str(inline))
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: {entry.path(key + '-data')} is not base64 text") from None
    if file := section.get(key):
        try:
            return (base / str(file)).read_bytes()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read {entry.path(key)}: {e}") from e
    return None


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # The ssl module loads client keys only from files: write them to a private temporary
    # file that exists only for the duration of this call. An encrypted key is an error, not
    # OpenSSL's interactive password prompt.
    with tempfile.NamedTemporaryFile("wb", prefix="kokpit-", suffix=".pem") as f:
        os.chmod(f.name, 0o600)
        f.write(cert + b"\n" + key)
        f.flush()
        ctx.load_cert_chain(f.name, password=b"")
