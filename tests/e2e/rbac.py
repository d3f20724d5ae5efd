"""Credentials of a service account, so e2e tests run operators (and other actors) with the
permissions of ``config/rbac``, never as cluster admin."""

from __future__ import annotations

from pathlib import Path

from kokpit.local import Kubectl
from kokpit.runtime import ClientConfig

RBAC = Path(__file__).parents[2] / "config" / "rbac"


def apply_rbac(kubectl: Kubectl, name: str) -> None:
    """Apply ``config/rbac/<name>.yaml`` (creating kokpit-system first)."""
    kubectl.apply(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kokpit-system"}}]
    )
    kubectl.run("apply", "-f", str(RBAC / f"{name}.yaml"))


def service_account(
    kubectl: Kubectl, admin: ClientConfig, namespace: str, name: str
) -> ClientConfig:
    """A client configuration authenticating as ``namespace/name`` (a fresh bound token)."""
    kubectl.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace},
            }
        ]
    )
    token = kubectl.run("create", "token", "-n", namespace, name, "--duration=2h").strip()
    return ClientConfig(server=admin.server, ca_data=admin.ca_data, token=token)
