"""The node agent's identity in its business cluster, and what it may do there.

A node agent reports hardware faults (and node-problem-detector-style conditions) as
conditions of its own Node, through the business cluster's API server. Its identity is a
client certificate signed by that cluster's CA for the user ``kokpit:node-agent:<node>`` in
the group ``kokpit:node-agents`` (:func:`identity`, :func:`issue`), one per node.

What the group may do is bound twice, inside the business cluster:

- RBAC (:func:`rbac`): get Nodes, patch ``nodes/status``; nothing else.
- A ValidatingAdmissionPolicy evaluated by the API server itself (:func:`policy`), since RBAC
  cannot name "its own node" for a group or select conditions: a member of the group may
  change only the Node its user name names, only through ``nodes/status``, and only conditions
  of the fault types in :data:`~kokpit.api.v1alpha1.nodefault.NODE_CONDITION_FAULTS`; a report
  of any other type (``Ready``, a typo) is refused with a message that lists the types allowed.

The Cluster-Operator installs both into every business cluster it runs (with kokpit's own
access, :mod:`kokpit.controllers.cluster.access`); ``config/rbac/node-agent.yaml`` and
``config/admission/node-fault-reports.yaml`` are the same objects for clusters kokpit did not
create, written by ``python -m kokpit.pki.nodeagent`` (``make generate``; a unit test fails
when they differ).
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from kokpit.api.names import DNS1123_SUBDOMAIN, SUBDOMAIN_MAX
from kokpit.api.v1alpha1.nodefault import NODE_CONDITION_FAULTS
from kokpit.pki.certificates import LEAF_VALIDITY, Identity, issue_client
from kokpit.pki.kubeconfig import render_data

GROUP = "kokpit:node-agents"
USER_PREFIX = "kokpit:node-agent:"
ROLE_NAME = "kokpit:node-agent"
POLICY_NAME = "kokpit-node-fault-reports"
#: What else of a Node a status update could change, none of which an agent may: the status
#: fields besides the conditions, and the metadata a status write does not reset. Not
#: ``capacity`` and ``allocatable``: CEL does not see maps of quantities (the policy would
#: fail to type-check), so an agent could change those of its own node, as its kubelet can.
UNCHANGED = (
    *(
        f"status.{f}"
        for f in (
            "addresses",
            "config",
            "daemonEndpoints",
            "images",
            "nodeInfo",
            "phase",
            "volumesAttached",
            "volumesInUse",
        )
    ),
    *(f"metadata.{f}" for f in ("labels", "annotations", "ownerReferences", "finalizers")),
)
LABELS = {"app.kubernetes.io/managed-by": "kokpit"}


class InvalidNodeName(ValueError):
    """Not a Node name: no identity is issued for it."""


def identity(node: str) -> Identity:
    """The node agent of ``node``: its user and group (``file`` names its kubeconfig user)."""
    if len(node) > SUBDOMAIN_MAX or not re.fullmatch(DNS1123_SUBDOMAIN.strip("^$"), node):
        raise InvalidNodeName(
            f"{node[:80]!r} is not a Node name (lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters)"
        )
    return Identity(f"node-agent-{node}", USER_PREFIX + node, (GROUP,))


def issue(
    ca_cert: bytes, ca_key: bytes, node: str, validity: dt.timedelta = LEAF_VALIDITY
) -> tuple[bytes, bytes]:
    """A client certificate and key (PEM) for ``node``'s agent, signed by the business
    cluster's CA. kokpit keeps no copy: whoever asked delivers it to the node."""
    return issue_client(ca_cert, ca_key, identity(node), validity)


def kubeconfig(
    *,
    server: str,
    ca_cert: bytes,
    ca_key: bytes,
    node: str,
    cluster_name: str,
    validity: dt.timedelta = LEAF_VALIDITY,
) -> str:
    """A kubeconfig for ``node``'s agent: a fresh key and certificate, and the cluster's CA."""
    who = identity(node)
    cert, key = issue(ca_cert, ca_key, node, validity)
    return render_data(
        server=server, ca=ca_cert, cert=cert, key=key, user=who.file, cluster_name=cluster_name
    )


def rbac() -> list[dict[str, Any]]:
    """The ClusterRole of the group and its binding."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": ROLE_NAME, "labels": LABELS},
            "rules": [
                # Read its node, to keep a condition's lastTransitionTime when only the
                # message changes.
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
                # Report: patch the node's status (held to its own node and to fault
                # conditions by the admission policy).
                {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": ROLE_NAME, "labels": LABELS},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": ROLE_NAME,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": GROUP}],
        },
    ]


def _unchanged(field: str) -> str:
    new, old = f"object.{field}", f"oldObject.{field}"
    return f"(has({new}) == has({old}) && (!has({new}) || {new} == {old}))"


def policy() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy and its binding."""
    types = ", ".join(f"'{t}'" for t in NODE_CONDITION_FAULTS)
    listed = ", ".join(NODE_CONDITION_FAULTS)
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": POLICY_NAME, "labels": LABELS},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE", "DELETE"],
                            "resources": ["nodes", "nodes/status"],
                        }
                    ]
                },
                "matchConditions": [
                    {"name": "node-agent", "expression": f"'{GROUP}' in request.userInfo.groups"}
                ],
                "variables": [
                    {"name": "faultTypes", "expression": f"[{types}]"},
                    {
                        "name": "statusUpdate",
                        # A request for the Node itself has no subResource at all.
                        "expression": "request.operation == 'UPDATE' && "
                        "has(request.subResource) && request.subResource == 'status' && "
                        "has(object.status) && has(oldObject.status)",
                    },
                    {
                        "name": "oldConditions",
                        "expression": "variables.statusUpdate && "
                        "has(oldObject.status.conditions) ? oldObject.status.conditions : []",
                    },
                    {
                        "name": "newConditions",
                        "expression": "variables.statusUpdate && "
                        "has(object.status.conditions) ? object.status.conditions : []",
                    },
                    # The types of the conditions this request adds, changes or removes.
                    {
                        "name": "changed",
                        "expression": "variables.newConditions.filter(c, "
                        "!variables.oldConditions.exists(o, o == c)).map(c, c.type) +\n"
                        "variables.oldConditions.filter(o, "
                        "!variables.newConditions.exists(c, c.type == o.type)).map(o, o.type)",
                    },
                    {
                        "name": "foreign",
                        "expression": "variables.changed.filter(t, !(t in variables.faultTypes))",
                    },
                ],
                "validations": [
                    {
                        "expression": f"request.userInfo.username == '{USER_PREFIX}' + "
                        "request.name",
                        "reason": "Forbidden",
                        "messageExpression": "'a node agent reports for its own node only: ' + "
                        "request.userInfo.username + ' may not change node ' + request.name",
                    },
                    {
                        "expression": "variables.statusUpdate",
                        "reason": "Forbidden",
                        "message": "a node agent may only update its node's status "
                        "(nodes/status), to report fault conditions",
                    },
                    {
                        "expression": "variables.foreign.size() == 0",
                        "reason": "Invalid",
                        "messageExpression": "'a node agent reports only fault conditions, of "
                        f"the types {listed}; not ' + variables.foreign.join(', ')",
                    },
                    {
                        "expression": "!variables.statusUpdate || ("
                        + " &&\n".join(_unchanged(f) for f in UNCHANGED)
                        + ")",
                        "reason": "Forbidden",
                        "message": "a node agent may change only the fault conditions of its "
                        "node's status, nothing else of the node",
                    },
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY_NAME, "labels": LABELS},
            "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]},
        },
    ]


RBAC_HEADER = """\
# What a node agent (user kokpit:node-agent:<node>, group kokpit:node-agents, a client
# certificate signed by the business cluster's CA) may do in its business cluster: read Nodes
# and patch nodes/status. The admission policy in config/admission/node-fault-reports.yaml holds
# it to its own Node and to fault conditions. The Cluster-Operator installs both into every
# business cluster it runs; apply them by hand elsewhere.
# Generated from kokpit/pki/nodeagent.py by `make generate`: do not edit.
"""
POLICY_HEADER = """\
# Who may report which node condition as a node agent (docs/self-healing.md). RBAC
# (config/rbac/node-agent.yaml) lets the group kokpit:node-agents patch any Node's status;
# this policy, evaluated by the API server itself (no webhook to run), lets a member change
# only the Node named in its user name (kokpit:node-agent:<node>), only through nodes/status,
# and only conditions of the fault types kokpit knows (NODE_CONDITION_FAULTS in
# kokpit/api/v1alpha1/nodefault.py): an unknown type is refused with a message listing them.
# Generated from kokpit/pki/nodeagent.py by `make generate`: do not edit.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the long CEL expressions) as literal blocks, line by line."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def documents(objects: list[dict[str, Any]], header: str) -> str:
    """``objects`` as one YAML stream after ``header``."""
    return header + yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, width=100)


FILES = {
    Path("config/rbac/node-agent.yaml"): (rbac, RBAC_HEADER),
    Path("config/admission/node-fault-reports.yaml"): (policy, POLICY_HEADER),
}


def main(root: Path) -> None:
    for path, (objects, header) in FILES.items():
        (root / path).write_text(documents(objects(), header))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
