"""``kokpit agent kubeconfig|report``: a node agent's credentials, and a fault report with them.

    kokpit agent kubeconfig --cluster NAMESPACE/NAME --node NODE [--kubeconfig META]
                            [--server URL] [--validity-days N] [-o FILE]
    kokpit agent report --kubeconfig AGENT --node NODE --type DiskFailure --status True
                        [--reason REASON] [--message TEXT]

``kubeconfig`` issues a client certificate for the user ``kokpit:node-agent:<node>`` (group
``kokpit:node-agents``) signed by the business cluster's CA, read from the Cluster's PKI Secret
in the meta-cluster (so whoever runs it must be able to read that Secret), and prints a
kubeconfig for the business cluster (``--server`` when the node reaches the API server at
another address than the Cluster's endpoint). kokpit keeps no copy.

``report`` sets a fault condition of the node, as node-problem-detector would: in the business
cluster, with the agent's own credentials, which the API server holds to that one node and to
fault conditions (docs/self-healing.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from kokpit.api.conditions import now
from kokpit.api.v1alpha1 import CLUSTERS
from kokpit.api.v1alpha1.cluster import object_name
from kokpit.api.v1alpha1.nodefault import NODE_CONDITION_FAULTS
from kokpit.pki import nodeagent
from kokpit.pki.kubeconfig import save
from kokpit.runtime import ApiError, Client, ClientConfig, ConfigError, PatchType, controlled_by
from kokpit.runtime.resources import NODES, SECRETS


def register(sub: Any) -> None:
    p = sub.add_parser(
        "agent",
        help="a node agent's credentials and fault reports",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_subparsers(dest="agent", required=True, metavar="COMMAND")
    k = which.add_parser("kubeconfig", help="issue a node agent's kubeconfig")
    k.add_argument("--kubeconfig", type=Path, default=None, help="the meta-cluster's")
    k.add_argument("--cluster", required=True, metavar="NAMESPACE/NAME")
    k.add_argument("--node", required=True)
    k.add_argument("--server", default=None, help="the business API server's URL for the node")
    k.add_argument("--validity-days", type=int, default=90)
    k.add_argument("-o", "--output", type=Path, default=None, help="file (mode 0600)")
    k.set_defaults(run=run_kubeconfig)
    r = which.add_parser("report", help="report a fault condition of the agent's node")
    r.add_argument("--kubeconfig", type=Path, required=True, help="the agent's")
    r.add_argument("--node", required=True)
    r.add_argument("--type", required=True, choices=NODE_CONDITION_FAULTS, metavar="TYPE")
    r.add_argument("--status", required=True, choices=("True", "False", "Unknown"))
    r.add_argument("--reason", default="ReportedByAgent")
    r.add_argument("--message", default="")
    r.set_defaults(run=run_report)


def run_kubeconfig(args: argparse.Namespace) -> int:
    try:
        text = asyncio.run(_kubeconfig(args))
    except (AgentError, ConfigError, nodeagent.InvalidNodeName) as e:
        print(f"kokpit: {e}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.write(text)
    else:
        save(args.output, text)
    return 0


def run_report(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_report(args))
    except (AgentError, ConfigError) as e:
        print(f"kokpit: {e}", file=sys.stderr)
        return 1
    return 0


class AgentError(Exception):
    """What went wrong, for a person (never a Secret's content)."""


async def _kubeconfig(args: argparse.Namespace) -> str:
    namespace, _, name = str(args.cluster).partition("/")
    if not namespace or not name:
        raise AgentError(f"--cluster must be NAMESPACE/NAME, not {args.cluster!r}")
    nodeagent.identity(args.node)  # a bad node name fails before anything is read
    async with Client(ClientConfig.load(args.kubeconfig)) as meta:
        try:
            cluster = await meta.get(CLUSTERS, name, namespace=namespace)
            secret_name = object_name(name, "pki")
            secret = await meta.get(SECRETS, secret_name, namespace=namespace)
        except ApiError as e:
            raise AgentError(f"cannot read Cluster {args.cluster} or its PKI: {e}") from None
    if not controlled_by(secret, cluster["metadata"]["uid"]):
        raise AgentError(f"Secret {secret_name} is not the PKI of Cluster {args.cluster}")
    server = args.server or (cluster.get("status") or {}).get("endpoint")
    if not server:
        raise AgentError(f"Cluster {args.cluster} has no endpoint yet; give --server")
    data = secret.get("data") or {}
    try:
        ca_cert, ca_key = (base64.b64decode(data[k], validate=True) for k in ("ca.crt", "ca.key"))
    except (KeyError, binascii.Error, TypeError, ValueError):
        raise AgentError(f"Secret {secret_name} has no usable ca.crt and ca.key") from None
    return nodeagent.kubeconfig(
        server=server,
        ca_cert=ca_cert,
        ca_key=ca_key,
        node=args.node,
        cluster_name=name,
        validity=dt.timedelta(days=args.validity_days),
    )


def condition(
    current: dict[str, Any] | None, type_: str, status: str, reason: str, message: str
) -> dict[str, Any]:
    """The condition to report: its transition time kept unless its status changes."""
    stamp = now()
    same = current is not None and current.get("status") == status
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": (current or {}).get("lastTransitionTime") if same else stamp,
    }


async def _report(args: argparse.Namespace) -> None:
    async with Client(ClientConfig.load(args.kubeconfig)) as business:
        try:
            node = await business.get(NODES, args.node)
            conditions = (node.get("status") or {}).get("conditions") or []
            current = next((c for c in conditions if c.get("type") == args.type), None)
            report = condition(current, args.type, args.status, args.reason, args.message)
            await business.patch(
                NODES,
                args.node,
                {"status": {"conditions": [report]}},
                patch_type=PatchType.STRATEGIC,
                subresource="status",
            )
        except ApiError as e:
            raise AgentError(f"the report was refused: {e}") from None
