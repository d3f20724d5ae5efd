"""Kubeconfigs: files for the local meta-cluster, and text for the Secrets of business clusters.

Each file is self-contained (certificates embedded as base64), so it can be copied elsewhere,
and is written as JSON, which every kubeconfig reader accepts since YAML is a superset of JSON.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from kokpit.pki.certificates import PKI, Identity


def render(*, server: str, pki: PKI, who: Identity, cluster_name: str) -> str:
    return render_data(
        server=server,
        ca=pki.ca_cert.read_bytes(),
        cert=pki.client_cert(who).read_bytes(),
        key=pki.client_key(who).read_bytes(),
        user=who.file,
        cluster_name=cluster_name,
    )


def render_data(
    *, server: str, ca: bytes, cert: bytes, key: bytes, user: str, cluster_name: str
) -> str:
    """A kubeconfig from PEM bytes (for one kept in a Secret)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
    }
    return json.dumps(config, indent=2) + "\n"


def write(path: Path, *, server: str, pki: PKI, who: Identity, cluster_name: str) -> None:
    save(path, render(server=server, pki=pki, who=who, cluster_name=cluster_name))


def save(path: Path, text: str) -> None:
    """Write atomically with mode 0600: the file holds a private key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    tmp.write_text(text)
    tmp.rename(path)
