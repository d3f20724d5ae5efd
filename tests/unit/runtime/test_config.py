import base64
import json
from pathlib import Path

import pytest

from kokpit.runtime.config import ClientConfig, ConfigError


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
    with pytest.raises(ConfigError, match="no cluster named 'nope'"):
        ClientConfig.from_kubeconfig(path, context="broken")
    with pytest.raises(ConfigError, match="cannot read kubeconfig"):
        ClientConfig.from_kubeconfig(tmp_path / "absent")


def test_in_cluster_needs_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="not running in a pod"):
        ClientConfig.in_cluster()
