"""Bootstrap tokens: the token Secret a business cluster authenticates with, and the mirror
Secret the Machine-Operator builds a host's bootstrap kubeconfig from, read as hostile input."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from kokpit.pki import PKI
from kokpit.pki.bootstrap import (
    GROUP,
    TOKEN_SECRET_TYPE,
    BootstrapCredentials,
    BootstrapToken,
    InvalidBootstrapToken,
    kubeconfig,
    parse,
)

NOW = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    pki = PKI(tmp_path_factory.mktemp("pki"), clients=())
    pki.ensure()
    return pki.ca_cert.read_bytes()


def b64(data: dict[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in data.items()}


def test_a_token_is_random_in_the_api_servers_format_and_expires() -> None:
    tokens = {BootstrapToken.new(timedelta(hours=24), NOW) for _ in range(20)}
    assert len({t.token_id for t in tokens}) == 20
    for t in tokens:
        assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", t.token)
        assert t.expiration - t.issued == timedelta(hours=24)
        assert t.secret not in repr(t)


def test_the_business_clusters_secret_authenticates_only_and_names_kokpits_group() -> None:
    token = BootstrapToken.new(timedelta(hours=24), NOW)
    secret = token.token_secret("for hosts")
    assert secret["type"] == TOKEN_SECRET_TYPE == "bootstrap.kubernetes.io/token"
    assert secret["metadata"]["namespace"] == "kube-system"
    assert secret["metadata"]["name"] == f"bootstrap-token-{token.token_id}"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["token-id"] == token.token_id
    assert data["token-secret"] == token.secret
    assert data["expiration"] == "2026-11-28T09:00:00Z"
    assert data["usage-bootstrap-authentication"] == "true"
    assert "usage-bootstrap-signing" not in data
    assert data["auth-extra-groups"] == GROUP
    assert GROUP.startswith("system:bootstrappers:kokpit:")
    assert BootstrapToken.secret_of(secret) == token.secret


def test_a_successor_is_due_after_the_share_of_the_lifetime() -> None:
    token = BootstrapToken.new(timedelta(hours=3), NOW)
    assert token.renewal_at(2 / 3) == NOW + timedelta(hours=2)


def test_the_mirror_round_trips_and_builds_a_bootstrap_kubeconfig(ca: bytes) -> None:
    token = BootstrapToken.new(timedelta(hours=1), NOW)
    creds = BootstrapCredentials(token, "https://127.0.0.1:6443", ca)
    back = parse(b64(creds.mirror()), secret="c-bootstrap-token")
    assert back == creds
    config = json.loads(kubeconfig(back, cluster_name="c"))
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca
    assert config["users"][0]["user"] == {"token": token.token}


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("token-id", b"ABCDEF", "not a bootstrap token"),
        ("token-secret", b"short", "not a bootstrap token"),
        ("token-secret", b"\xff" * 16, "not ASCII"),
        ("expiration", b"tomorrow", "not a time"),
        ("server", b"http://127.0.0.1:6443", "https://"),
        ("server", b"https://127.0.0.1:6443/x?y", "https://"),
        ("server", b"https://user:pw@127.0.0.1:6443", "https://"),
        ("ca.crt", b"-----BEGIN CERTIFICATE-----\nnope\n", "not PEM"),
        ("ca.crt", b"", "lacks ca.crt"),
    ],
)
def test_a_bad_mirror_is_refused_naming_the_key_never_the_value(
    ca: bytes, key: str, value: bytes, why: str
) -> None:
    token = BootstrapToken.new(timedelta(hours=1), NOW)
    data = BootstrapCredentials(token, "https://127.0.0.1:6443", ca).mirror() | {key: value}
    with pytest.raises(InvalidBootstrapToken, match=re.escape(why)) as e:
        parse(b64(data), secret="c-bootstrap-token")
    assert "c-bootstrap-token" in str(e.value)
    assert token.secret not in str(e.value)
    if value:
        assert value.decode("latin-1") not in str(e.value)


def test_a_mirror_value_that_is_not_base64_is_refused(ca: bytes) -> None:
    token = BootstrapToken.new(timedelta(hours=1), NOW)
    data = b64(BootstrapCredentials(token, "https://h:1", ca).mirror())
    data["token-secret"] = "!!!" + token.secret
    with pytest.raises(InvalidBootstrapToken, match="token-secret is not base64") as e:
        parse(data, secret="s")
    assert token.secret not in str(e.value)


def test_secret_of_a_foreign_secret_without_the_key_is_none() -> None:
    assert BootstrapToken.secret_of({"data": {}}) is None
    assert BootstrapToken.secret_of({"data": {"token-secret": "%%%"}}) is None


def test_the_cluster_operator_issues_anew_when_the_mirror_is_not_for_this_cluster(
    ca: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A mirror is kept only if it parses and names this cluster's endpoint and CA; anything
    else (a renamed endpoint, a new CA, a damaged Secret) gets a new token."""
    from kokpit.controllers.cluster.bootstrap import _current

    other = PKI(tmp_path_factory.mktemp("other"), clients=())
    other.ensure()
    token = BootstrapToken.new(timedelta(hours=1), NOW)
    mirror = {"data": b64(BootstrapCredentials(token, "https://127.0.0.1:6443", ca).mirror())}
    kept = _current(mirror, "s", "https://127.0.0.1:6443", ca)
    assert kept is not None
    assert kept.token == token
    assert _current(mirror, "s", "https://127.0.0.1:7443", ca) is None
    assert _current(mirror, "s", "https://127.0.0.1:6443", other.ca_cert.read_bytes()) is None
    assert _current({"data": {"token-id": "x"}}, "s", "https://127.0.0.1:6443", ca) is None
    assert _current(None, "s", "https://127.0.0.1:6443", ca) is None
