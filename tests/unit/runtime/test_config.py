import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kokpit.pki import ADMIN, PKI
from kokpit.pki.kubeconfig import render_data
from kokpit.runtime.config import ClientConfig, ConfigError

#: In every value of a hostile kubeconfig: it must never come back in an error.
MARKER = "Zq7MARKERsecretXk2"


def kubeconfig(tmp_path: Path, user: dict[str, object]) -> Path:
    (tmp_path / "ca.crt").write_bytes(b"CA PEM")
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "one",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": "https://127.0.0.1:6443/", "certificate-authority": "ca.crt"},
            }
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [
            {"name": "one", "context": {"cluster": "c", "user": "u"}},
            {"name": "broken", "context": {"cluster": "nope", "user": "u"}},
        ],
    }
    path = tmp_path / "config"
    path.write_text(json.dumps(doc))
    return path


def test_client_certificate_inline_and_ca_from_a_relative_file(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path,
        {
            "client-certificate-data": base64.b64encode(b"CERT").decode(),
            "client-key-data": base64.b64encode(b"KEY").decode(),
        },
    )
    config = ClientConfig.from_kubeconfig(path, qps=7)
    assert config.server == "https://127.0.0.1:6443"
    assert config.ca_data == b"CA PEM"
    assert (config.cert_data, config.key_data) == (b"CERT", b"KEY")
    assert config.qps == 7
    assert "KEY" not in repr(config)


def test_token_file_is_read_on_use(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("first\n")
    config = ClientConfig.from_kubeconfig(kubeconfig(tmp_path, {"tokenFile": "token"}))
    assert config.bearer_token() == "first"
    (tmp_path / "token").write_text("rotated")
    assert config.bearer_token() == "rotated"


def test_secrets_never_show_in_repr(tmp_path: Path) -> None:
    config = ClientConfig.from_kubeconfig(kubeconfig(tmp_path, {"token": "s3cr3t"}))
    assert config.bearer_token() == "s3cr3t"
    assert "s3cr3t" not in repr(config)


def test_a_context_naming_a_missing_cluster_is_a_clear_error(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {"token": "t"})
    with pytest.raises(ConfigError, match=r"contexts\[1\]\.context\.cluster names no entry"):
        ClientConfig.from_kubeconfig(path, context="broken")
    with pytest.raises(ConfigError, match="cannot read kubeconfig"):
        ClientConfig.from_kubeconfig(tmp_path / "absent")


def test_in_cluster_needs_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="not running in a pod"):
        ClientConfig.in_cluster()


# A kubeconfig from an object (a Secret) is inline-only: the strict path.


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    pki = PKI(tmp_path_factory.mktemp("pki"))
    pki.ensure()
    return pki


def secret_doc(pki: PKI) -> dict[str, Any]:
    """What the Cluster-Operator writes into an admin kubeconfig Secret."""
    doc: dict[str, Any] = json.loads(
        render_data(
            server="https://127.0.0.1:6443",
            ca=pki.ca_cert.read_bytes(),
            cert=pki.client_cert(ADMIN).read_bytes(),
            key=pki.client_key(ADMIN).read_bytes(),
            user="admin",
            cluster_name="biz",
        )
    )
    return doc


def test_the_operators_own_kubeconfig_secret_is_accepted(pki: PKI) -> None:
    doc = secret_doc(pki)
    doc["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = False  # off is harmless
    doc["clusters"][0]["cluster"]["extensions"] = [{"name": "x", "extension": {}}]
    config = ClientConfig.from_kubeconfig_data(json.dumps(doc).encode(), source="Secret a/b", qps=3)
    assert config.server == "https://127.0.0.1:6443"
    assert config.ca_data == pki.ca_cert.read_bytes()
    assert config.key_data == pki.client_key(ADMIN).read_bytes()
    assert config.token_file is None
    assert not config.insecure_skip_tls_verify
    assert config.qps == 3
    assert pki.client_key(ADMIN).read_text().splitlines()[1] not in repr(config)


Edit = Callable[[dict[str, Any], dict[str, Any]], None]


def put(key: str, value: object, where: str = "user") -> Edit:
    def edit(cluster: dict[str, Any], user: dict[str, Any]) -> None:
        (user if where == "user" else cluster)[key] = value

    return edit


def drop(key: str, where: str = "cluster") -> Edit:
    def edit(cluster: dict[str, Any], user: dict[str, Any]) -> None:
        (user if where == "user" else cluster).pop(key)

    return edit


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# (what the hostile edit does, the edit, what the message must say). Every value carries MARKER.
REFUSALS: list[tuple[str, Edit, str]] = [
    ("token file", put("tokenFile", f"/var/run/{MARKER}/token"), r"users\[0\]\.user\.tokenFile"),
    ("certificate file", put("client-certificate", f"/{MARKER}.crt"), r"user\.client-certificate "),
    ("key file", put("client-key", f"/{MARKER}.key"), r"user\.client-key "),
    (
        "CA file",
        put("certificate-authority", f"/{MARKER}", "cluster"),
        r"clusters\[0\]\.cluster\.certificate-authority ",
    ),
    ("exec plugin", put("exec", {"command": MARKER}), r"user\.exec is refused"),
    ("auth plugin", put("auth-provider", {"name": MARKER}), r"user\.auth-provider is refused"),
    ("basic auth user", put("username", MARKER), r"user\.username is refused"),
    ("basic auth password", put("password", MARKER), r"user\.password is refused"),
    ("impersonation", put("as", MARKER), r"user\.as is refused"),
    ("an unknown user field", put(MARKER, "x"), r"users\[0\]\.user has a field other than"),
    (
        "skipped TLS verification",
        put("insecure-skip-tls-verify", True, "cluster"),
        r"cluster\.insecure-skip-tls-verify is refused",
    ),
    ("a proxy", put("proxy-url", f"http://{MARKER}:3128", "cluster"), r"cluster\.proxy-url"),
    (
        "another TLS name",
        put("tls-server-name", MARKER, "cluster"),
        r"cluster\.tls-server-name is refused",
    ),
    ("plain HTTP", put("server", f"http://{MARKER}:80", "cluster"), r"server must be an https"),
    ("no server", drop("server"), r"cluster\.server is missing"),
    (
        "credentials in the URL",
        put("server", f"https://u:{MARKER}@host:6443", "cluster"),
        r"server may not carry user information",
    ),
    ("a bad port", put("server", f"https://host:{MARKER}", "cluster"), r"server is not a URL"),
    ("no CA", drop("certificate-authority-data"), r"certificate-authority-data is required"),
    (
        "a CA that is not base64",
        put("certificate-authority-data", f"!{MARKER}!", "cluster"),
        r"certificate-authority-data is not base64",
    ),
    (
        "a CA that is not a certificate",
        put("certificate-authority-data", b64(MARKER), "cluster"),
        r"certificate authority is not a PEM certificate",
    ),
    (
        "a certificate without its key",
        drop("client-key-data", "user"),
        r"needs both client-certificate-data and client-key-data",
    ),
    (
        "a key that does not match",
        put("client-key-data", b64(f"-----BEGIN EC PRIVATE KEY-----\n{MARKER}\n")),
        r"client certificate and key are not a matching PEM pair",
    ),
    ("a token that splits a header", put("token", f"{MARKER}\r\nX: y"), r"user\.token is not"),
]


@pytest.mark.parametrize(
    ("edit", "message"), [(e, m) for _, e, m in REFUSALS], ids=[i for i, _, _ in REFUSALS]
)
def test_a_kubeconfig_from_an_object_is_inline_only(pki: PKI, edit: Edit, message: str) -> None:
    doc = secret_doc(pki)
    edit(doc["clusters"][0]["cluster"], doc["users"][0]["user"])
    text = yaml.safe_dump(doc)
    with pytest.raises(ConfigError, match=message) as refused:
        ClientConfig.from_kubeconfig_data(text, source="Secret team-a/biz-admin-kubeconfig")
    assert "Secret team-a/biz-admin-kubeconfig" in str(refused.value)
    assert MARKER not in str(refused.value)
    assert MARKER not in repr(refused.value)
    # Nothing chained either: a logger that prints the traceback shows causes too.
    assert refused.value.__cause__ is None or MARKER not in str(refused.value.__cause__)


def test_the_file_path_still_honours_what_its_admin_chose(tmp_path: Path) -> None:
    """The permissive reading is for the operator's own kubeconfig file only."""
    (tmp_path / "token").write_text("t0k")
    path = kubeconfig(tmp_path, {"tokenFile": "token"})
    doc = json.loads(path.read_text())
    doc["clusters"][0]["cluster"] |= {
        "server": "http://127.0.0.1:8080",
        "insecure-skip-tls-verify": True,
    }
    path.write_text(json.dumps(doc))
    config = ClientConfig.from_kubeconfig(path)
    assert (config.server, config.bearer_token(), config.ssl_context()) == (
        "http://127.0.0.1:8080",
        "t0k",
        False,
    )
    with pytest.raises(ConfigError, match=r"is refused: it names a file"):
        ClientConfig.from_kubeconfig_data(path.read_text())


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        (f"clusters: [{{name: {MARKER}\n", MARKER),  # unterminated flow sequence
        (f"users: !{MARKER} x\n", MARKER),  # an unknown tag
        (f"a: b\n  {MARKER}: : c\n", MARKER),  # bad indentation
        (f"\t{MARKER}: x\n", MARKER),  # a tab
        (MARKER.encode() + b"\xff\xfe: x\n", "#x00ff"),  # not UTF-8: the byte is quoted
    ],
)
def test_yaml_errors_give_a_position_never_the_text(text: str | bytes, quoted: str) -> None:
    with pytest.raises(yaml.YAMLError) as raw:
        yaml.safe_load(text)
    assert quoted in str(raw.value)  # PyYAML's own message quotes the document
    with pytest.raises(ConfigError, match=r"cannot parse kubeconfig Secret a/b: not") as e:
        ClientConfig.from_kubeconfig_data(text, source="Secret a/b")
    assert quoted not in str(e.value)
    assert "line" in str(e.value) or "byte" in str(e.value)
    assert e.value.__cause__ is None


def test_a_document_nested_too_deeply_is_a_config_error() -> None:
    text = "[" * 100_000 + MARKER + "]" * 100_000
    with pytest.raises(ConfigError, match="nested too deeply") as e:
        ClientConfig.from_kubeconfig_data(text)
    assert MARKER not in str(e.value)


@pytest.mark.parametrize(
    "doc",
    [
        [MARKER],
        {"current-context": MARKER},
        {"current-context": "c", "contexts": {MARKER: 1}},
        {"current-context": "c", "contexts": [{"name": "c", "context": MARKER}]},
        {
            "current-context": "c",
            "contexts": [{"name": "c", "context": {"cluster": MARKER, "user": "u"}}],
        },
    ],
)
def test_a_malformed_document_is_a_config_error_without_its_values(doc: object) -> None:
    with pytest.raises(ConfigError) as e:
        ClientConfig.from_kubeconfig_data(json.dumps(doc))
    assert MARKER not in str(e.value)


def test_a_config_built_by_hand_never_shows_its_secrets(pki: PKI) -> None:
    key = pki.client_key(ADMIN).read_bytes()
    config = ClientConfig(
        server="https://x", ca_data=pki.ca_cert.read_bytes(), key_data=key, token="s3cr3t"
    )
    body = key.decode().splitlines()[1]
    assert "s3cr3t" not in repr(config)
    assert body not in repr(config)
    mismatched = ClientConfig(
        server="https://x", cert_data=pki.serving_cert.read_bytes(), key_data=key, token="s3cr3t"
    )
    with pytest.raises(ConfigError, match="not a matching PEM pair") as e:
        mismatched.ssl_context()
    assert body not in str(e.value)
    assert e.value.__cause__ is None
