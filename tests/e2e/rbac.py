"""Credentials of a service account, so e2e tests run operators (and other actors) with the
permissions of ``config/rbac``, never as cluster admin."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from kokpit.local import Kubectl
from kokpit.runtime import ClientConfig
from tests.e2e.operators import OperatorProcess, Which, operator_process, write_kubeconfig

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


def bind_namespaced(kubectl: Kubectl, operator: str, namespace: str) -> None:
    """What an admin does for each namespace an operator works in: bind the operator's
    ``kokpit-<operator>-namespaced`` ClusterRole there with a RoleBinding."""
    name = f"kokpit-{operator}"
    kubectl.apply(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": f"{name}-namespaced",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": name, "namespace": "kokpit-system"}
                ],
            }
        ]
    )


def operator_identity(
    kubectl: Kubectl, admin: ClientConfig, operator: str, namespaces: list[str]
) -> ClientConfig:
    """The credentials of ``kokpit-system/kokpit-<operator>`` with exactly the permissions of
    ``config/rbac/<operator>.yaml`` (and of guard-client.yaml, which binds the operators that
    ask the guard), its namespaced role bound in ``namespaces``."""
    apply_rbac(kubectl, operator)
    apply_rbac(kubectl, "guard-client")
    for namespace in namespaces:
        bind_namespaced(kubectl, operator, namespace)
    return service_account(kubectl, admin, "kokpit-system", f"kokpit-{operator}")


@contextlib.asynccontextmanager
async def running_operator(
    which: Which,
    kubectl: Kubectl,
    admin: ClientConfig,
    namespaces: list[str],
    workdir: Path,
    args: Sequence[str] = (),
) -> AsyncIterator[OperatorProcess]:
    """``kokpit operator <which>`` as a process of its own, ready, under exactly its shipped
    RBAC (:func:`operator_identity`), its log in ``workdir``; stopped however the test ends."""
    identity = operator_identity(kubectl, admin, f"{which}-operator", namespaces)
    kubeconfig = write_kubeconfig(identity, workdir / f"{which}-operator.kubeconfig")
    with operator_process(which, kubeconfig, workdir / f"{which}.log", args) as op:
        await op.start()
        yield op
