"""Who kokpit is inside a business cluster.

The admin kubeconfig (``<cluster>-admin-kubeconfig``, ``system:masters``) is for people. The
Machine-Operator gets an identity of its own: a client certificate for the user
``kokpit:machine-operator`` (no group), bound inside the business cluster to a ClusterRole with
what node joining, gating and draining need, and nothing else. The Remediation operator, which
cordons and drains faulty nodes, acts with the same identity. Its kubeconfig is the Secret
``<cluster>-kokpit-kubeconfig`` (type ``kokpit.io/kubeconfig``, controlled by the Cluster); the
Machine-Operator trusts no other.

Hosts' own kubelets join by TLS bootstrap (:mod:`.bootstrap`). Three bindings to roles the API
server ships let them, and no more:

* the group of kokpit's bootstrap tokens (:data:`~kokpit.pki.bootstrap.GROUP`, not every
  ``system:bootstrappers``) may create a CertificateSigningRequest (``system:node-bootstrapper``)
  and have a node client certificate approved (``...:nodeclient``): a token buys one node
  identity, which the controller-manager signs;
* ``system:nodes`` may have the renewal of their own certificate approved (``...:selfnodeclient``).

What a node may do once it is one is the API server's Node authorizer's business, not RBAC's.

The pod-creation probe (:mod:`kokpit.controllers.probe`) runs its pods with the same identity:
the namespace ``kokpit-probe`` is made here, with a Role there for pods (:data:`PROBE_RULES`),
so that identity may create pods in that namespace only, and no namespaces at all.

The fault hub reads the nodes' Leases in ``kube-node-lease`` with the same identity (a Role
there, :data:`LEASE_RULES`). Node agents report faults of their own node with an identity of
their own (:mod:`kokpit.pki.nodeagent`): its RBAC and the admission policy that holds each agent
to its own node are installed here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kokpit.pki import MACHINE_OPERATOR, nodeagent
from kokpit.pki.bootstrap import GROUP as BOOTSTRAPPERS
from kokpit.providers.controlplane.clients import PROBE_NAMESPACE
from kokpit.runtime import ClientConfig, Resource
from kokpit.runtime.config import Resolve
from kokpit.runtime.resources import (
    CLUSTERROLEBINDINGS,
    CLUSTERROLES,
    NAMESPACES,
    ROLEBINDINGS,
    ROLES,
    VALIDATING_ADMISSION_POLICIES,
    VALIDATING_ADMISSION_POLICY_BINDINGS,
)

ROLE_NAME = "kokpit:machine-operator"


def admin_config(endpoint: str, pki: Mapping[str, bytes], resolve: Resolve | None) -> ClientConfig:
    """How the Cluster-Operator acts in a business cluster: as its admin, at its endpoint
    (a Service name is looked up through the meta-cluster when DNS does not know it)."""
    return ClientConfig(
        server=endpoint,
        ca_data=pki["ca.crt"],
        cert_data=pki["admin.crt"],
        key_data=pki["admin.key"],
        user_agent="kokpit-cluster-operator",
        resolve=resolve,
    )


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
    # Find the pods a drain must move; the Remediation workflow labels them kokpit.io/migrate
    # (patch) and deletes those left after its policy's drain timeout (delete).
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch", "delete"]},
    # Move them through the Eviction API, so PodDisruptionBudgets are honoured.
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
]


#: In ``kube-node-lease``: the fault hub finds nodes whose kubelet stopped renewing their Lease.
LEASE_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["list", "watch"]},
]
NODE_LEASES = "kube-node-lease"

#: In ``kokpit-probe``: the pod-creation probe creates a pod, watches it until it runs, deletes
#: it, and lists (to delete) those a crashed probe left.
PROBE_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["get", "list", "watch", "create", "delete"],
    },
]

#: Where each kind of object :func:`rbac` returns is applied.
RESOURCES: dict[str, Resource] = {
    r.kind: r
    for r in (
        NAMESPACES,
        CLUSTERROLES,
        CLUSTERROLEBINDINGS,
        ROLES,
        ROLEBINDINGS,
        VALIDATING_ADMISSION_POLICIES,
        VALIDATING_ADMISSION_POLICY_BINDINGS,
    )
}

_CSR_ROLES = "system:certificates.k8s.io:certificatesigningrequests"
#: (binding name, ClusterRole shipped by the API server, group bound to it).
NODE_BOOTSTRAP: list[tuple[str, str, str]] = [
    ("kokpit:node-bootstrapper", "system:node-bootstrapper", BOOTSTRAPPERS),
    ("kokpit:node-autoapprove-bootstrap", f"{_CSR_ROLES}:nodeclient", BOOTSTRAPPERS),
    ("kokpit:node-autoapprove-renewal", f"{_CSR_ROLES}:selfnodeclient", "system:nodes"),
]


def rbac() -> list[dict[str, Any]]:
    """The ClusterRole and its binding to the Machine-Operator's user (and its Roles on the
    node Leases and on the probe's pods, with the probe's namespace), the bindings that let
    hosts' kubelets join by TLS bootstrap, and the node agents' RBAC and admission policy."""
    labels = {"app.kubernetes.io/managed-by": "kokpit"}
    bootstrap = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
        }
        for name, role, group in NODE_BOOTSTRAP
    ]
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
        *_namespaced_role(NODE_LEASES, LEASE_RULES, labels),
        # Made before its Role: a Role cannot be applied in a namespace that does not exist.
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": PROBE_NAMESPACE, "labels": labels},
        },
        *_namespaced_role(PROBE_NAMESPACE, PROBE_RULES, labels),
        *bootstrap,
        *nodeagent.rbac(),
        *nodeagent.policy(),
    ]


def _namespaced_role(
    namespace: str, rules: list[dict[str, Any]], labels: dict[str, str]
) -> list[dict[str, Any]]:
    """A Role in ``namespace`` with ``rules``, bound to kokpit's user."""
    meta = {"name": ROLE_NAME, "namespace": namespace, "labels": labels}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE_NAME},
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": MACHINE_OPERATOR.user,
                }
            ],
        },
    ]
