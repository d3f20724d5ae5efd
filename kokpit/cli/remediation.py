"""``kokpit remediation``: a person takes over a node's repair.

    kokpit remediation list   [-n NS | -A]       the remediations, their phase and last action
    kokpit remediation resume NAME [-n NS]       climb the ladder again from its first rung
    kokpit remediation close  NAME [-n NS]       end it: uncordon what kokpit cordoned

``resume`` and ``close`` set the annotation ``kokpit.io/remediation-command`` on the
Remediation; the Remediation operator acts on it, records an Event, and removes it (so
``kubectl annotate`` does the same). The command returns once the annotation is set; watch
``kokpit remediation list`` or the Remediation's Events for the result.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from kokpit.api.v1alpha1 import REMEDIATIONS
from kokpit.api.v1alpha1.remediation import COMMAND_ANNOTATION
from kokpit.cli.objects import annotate, columns, show

COMMANDS = ("resume", "close")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "remediation",
        help="list remediations, resume or close one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--kubeconfig", type=Path, default=None)
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    ls = verbs.add_parser("list", help="the remediations")
    ls.add_argument("-n", "--namespace", default="default")
    ls.add_argument("-A", "--all-namespaces", action="store_true")
    ls.set_defaults(run=run_list)
    for command in COMMANDS:
        c = verbs.add_parser(command, help=f"{command} a remediation")
        c.add_argument("name")
        c.add_argument("-n", "--namespace", default="default")
        c.set_defaults(run=run_command, command=command)


def run_command(args: argparse.Namespace) -> int:
    return asyncio.run(_command(args))


def run_list(args: argparse.Namespace) -> int:
    return asyncio.run(_list(args))


async def _command(args: argparse.Namespace) -> int:
    return await annotate(
        args.kubeconfig, REMEDIATIONS, args.name, args.namespace, COMMAND_ANNOTATION, args.command
    )


async def _list(args: argparse.Namespace) -> int:
    namespace = None if args.all_namespaces else args.namespace
    return await show(args.kubeconfig, REMEDIATIONS, namespace, table)


def table(items: list[dict[str, Any]]) -> str:
    """The remediations as aligned columns (what ``kubectl get rem`` shows, plus the last
    attempt's state)."""
    rows = [("NAMESPACE", "NAME", "MACHINE", "FAULT", "PHASE", "STEP", "LAST ACTION")]
    for r in sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        status = r.get("status") or {}
        last = (status.get("attempts") or [{}])[-1]
        action = f"{last['action']} {last.get('state', '')}" if last.get("action") else "-"
        rows.append(
            (
                r["metadata"]["namespace"],
                r["metadata"]["name"],
                r["spec"]["machineRef"]["name"],
                str(status.get("faultType") or "-"),
                str(status.get("phase") or "-"),
                str(status.get("step", 0)),
                action,
            )
        )
    return columns(rows)
