"""Who kokpit is inside a business cluster.

The admin kubeconfig (``<cluster>-admin-kubeconfig``, ``system:masters``) is for people. The
Machine-Operator gets an identity of its own: a client certificate for the user
``kokpit:machine-operator`` (no group), bound inside the business cluster to a ClusterRole with
what node joining, gating and draining need, and nothing else. Its kubeconfig is the Secret
``<cluster>-kokpit-kubeconfig`` (type ``kokpit.io/kubeconfig``, controlled by the Cluster); the
Machine-Operator trusts no other.
"""

from __future__ import annotations

from typing import Any

from kokpit.pki import MACHINE_OPERATOR

ROLE_NAME = "kokpit:machine-operator"

#: Each rule with the reason the Machine-Operator needs it.
RULES: list[dict[str, Any]] = [
    # Register simulated hosts' nodes, taint and cordon them, delete them with their Machine;
    # watch them so a taint removed by hand is put back.
    {
        "apiGroups": [""],
        "resources": ["nodes"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    # Publish the readiness gates' conditions (server-side apply on the status).
    {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
    # Find the pods a drain must move.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    # Move them through the Eviction API, so PodDisruptionBudgets are honoured.
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
]


def rbac() -> list[dict[str, Any]]:
    """The ClusterRole and its binding to the Machine-Operator's user."""
    labels = {"app.kubernetes.io/managed-by": "kokpit"}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": ROLE_NAME, "labels": labels},
            "rules": RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": ROLE_NAME, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": ROLE_NAME,
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": MACHINE_OPERATOR.user,
                }
            ],
        },
    ]
