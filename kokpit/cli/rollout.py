"""``kokpit rollout``: follow a rollout, and a person's commands to it.

    kokpit rollout list   [-n NS | -A]      the rollouts: phase, batch, objects moved
    kokpit rollout pause  NAME [-n NS]      stop where it is; nothing more is changed
    kokpit rollout resume NAME [-n NS]      go on (after a pause, a manual gate, or an
                                            analysis that could not measure)
    kokpit rollout skip   NAME [-n NS]      pass the current batch without its remaining checks
    kokpit rollout abort  NAME [-n NS]      stop and move back what it changed
    kokpit rollout retry  NAME [-n NS]      start an aborted rollout again from its first batch

The commands set the annotation ``kokpit.io/rollout-command`` on the Rollout; the
Rollout-Operator acts on it, records an Event, and removes it (``kubectl annotate`` does the
same). A command that does not fit the rollout's phase is refused with an Event.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from kokpit.api.v1alpha1 import ROLLOUTS
from kokpit.api.v1alpha1.rollout import COMMAND_ANNOTATION, COMMANDS
from kokpit.cli.objects import annotate, columns, show


def register(sub: Any) -> None:
    p = sub.add_parser(
        "rollout",
        help="list rollouts; pause, resume, skip, abort or retry one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--kubeconfig", type=Path, default=None)
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    ls = verbs.add_parser("list", help="the rollouts")
    ls.add_argument("-n", "--namespace", default="default")
    ls.add_argument("-A", "--all-namespaces", action="store_true")
    ls.set_defaults(run=lambda a: asyncio.run(_list(a)))
    for command in COMMANDS:
        c = verbs.add_parser(command, help=f"{command} a rollout")
        c.add_argument("name")
        c.add_argument("-n", "--namespace", default="default")
        c.set_defaults(run=lambda a: asyncio.run(_command(a)), command=command)


async def _command(args: argparse.Namespace) -> int:
    return await annotate(
        args.kubeconfig, ROLLOUTS, args.name, args.namespace, COMMAND_ANNOTATION, args.command
    )


async def _list(args: argparse.Namespace) -> int:
    namespace = None if args.all_namespaces else args.namespace
    return await show(args.kubeconfig, ROLLOUTS, namespace, table)


def table(items: list[dict[str, Any]]) -> str:
    """The rollouts as aligned columns: what ``kubectl get ro`` shows, plus what the current
    batch waits for or why the rollout stopped."""
    rows = [("NAMESPACE", "NAME", "KIND", "VERSION", "PHASE", "BATCH", "UPDATED", "MESSAGE")]
    for r in sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        status = r.get("status") or {}
        batches = status.get("batches") or []
        index = int(status.get("currentBatch") or 0)
        current = batches[index] if index < len(batches) else {}
        message = status.get("abortReason") or current.get("message") or ""
        rows.append(
            (
                r["metadata"]["namespace"],
                r["metadata"]["name"],
                r["spec"]["target"]["kind"],
                r["spec"]["target"]["packageVersion"],
                str(status.get("phase") or "-"),
                f"{index}/{len(r['spec']['batches'])}",
                f"{status.get('updated', 0)}/{status.get('total', '-')}",
                message[:80],
            )
        )
    return columns(rows)
