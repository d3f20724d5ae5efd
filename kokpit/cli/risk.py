"""``kokpit risk``: what the guard has granted, and a person's reset.

    kokpit risk status [POLICY]   each policy's scopes: breaker, in flight, grants in the window;
                                  with POLICY, also its last decisions
    kokpit risk reset POLICY      close the policy's breakers (and, when its ledger was lost,
                                  start a new one)

``reset`` sets the annotation ``kokpit.io/risk-reset`` on the RiskPolicy to a new value; the
guard applies it at its next decision under the policy (``kubectl annotate`` does the same).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kokpit.api.v1alpha1 import RISK_LEDGERS, RISK_POLICIES
from kokpit.api.v1alpha1.riskpolicy import RESET_ANNOTATION
from kokpit.cli.objects import annotate
from kokpit.runtime import ApiError, Client, ClientConfig, ConfigError, NotFound

Object = dict[str, Any]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "risk",
        help="the guard's budgets; reset a breaker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--kubeconfig", type=Path, default=None)
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    status = verbs.add_parser("status", help="each policy's budget spent")
    status.add_argument("policy", nargs="?")
    status.set_defaults(run=lambda a: asyncio.run(_status(a)))
    reset = verbs.add_parser("reset", help="close a policy's breakers")
    reset.add_argument("policy")
    reset.set_defaults(run=lambda a: asyncio.run(_reset(a)))


async def _reset(args: argparse.Namespace) -> int:
    value = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return await annotate(
        args.kubeconfig, RISK_POLICIES, args.policy, None, RESET_ANNOTATION, value
    )


async def _status(args: argparse.Namespace) -> int:
    try:
        async with Client(ClientConfig.load(args.kubeconfig)) as client:
            if args.policy:
                policies = [await client.get(RISK_POLICIES, args.policy)]
            else:
                policies = (await client.list(RISK_POLICIES)).items
            items = (await client.list(RISK_LEDGERS)).items
            ledgers = {ledger["metadata"]["name"]: ledger for ledger in items}
    except NotFound:
        print(f"kokpit: no RiskPolicy {args.policy}", file=sys.stderr)
        return 1
    except (ApiError, ConfigError, OSError) as e:
        print(f"kokpit: {e}", file=sys.stderr)
        return 1
    print(table(policies, ledgers))
    if args.policy:
        decisions = (ledgers.get(args.policy, {}).get("status") or {}).get("decisions") or []
        print("\nlast decisions:")
        for d in decisions[-20:]:
            verdict = "allowed" if d["allowed"] else "DENIED"
            who = f"{d['action']} {d['target']} for {d['requester']}"
            print(f"{d['at']}  {who}: {verdict}, {d['reason']}")
    return 0


def table(policies: list[Object], ledgers: dict[str, Object]) -> str:
    rows = [("POLICY", "ACTIONS", "SCOPE", "BREAKER", "IN-FLIGHT", "GRANTS", "LEDGER")]
    for policy in sorted(policies, key=lambda p: p["metadata"]["name"]):
        name, spec = policy["metadata"]["name"], policy["spec"]
        actions = ",".join(spec.get("actions") or [])
        ledger = ledgers.get(name)
        known = (policy.get("status") or {}).get("ledgerUID")
        if ledger is None:
            state = "LOST: reset needed" if known else "none yet"
            rows.append((name, actions, "-", "-", "-", "-", state))
            continue
        scopes = (ledger.get("status") or {}).get("scopes") or []
        for entry in scopes or [{"key": "-"}]:
            rows.append(
                (
                    name,
                    actions,
                    entry["key"],
                    ((entry.get("breaker") or {}).get("state") or "Closed"),
                    str(len(entry.get("inFlight") or [])),
                    str(len(entry.get("grants") or [])),
                    "ok",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
