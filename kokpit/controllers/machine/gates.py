"""Readiness gating: the Condition ConfigMap format, and what the gates make of it.

Each joined Machine has one **Condition ConfigMap**: same namespace and name as the Machine,
labelled ``kokpit.io/node-conditions=true``, owned by the Machine (deleted with it), created
by the Machine-Operator when the node joins. Other operators report their sub-state of the node
there, one key per condition, the value a JSON object::

    data:
      example.com_NetworkReady: '{"type": "example.com/NetworkReady", "status": "True",
                                   "reason": "RoutesProgrammed", "message": "..."}'

The key is the reporter's choice (ConfigMap keys cannot hold ``/``; by convention the type
with ``/`` turned into ``_``); ``type`` and ``status`` (True, False, Unknown) are required.
Each reporter writes only its own keys, with a server-side apply under its own field manager,
so reporters never overwrite one another. RBAC: reporters get ``get`` and ``patch`` on
configmaps in the Machines' namespace (see ``config/rbac/node-condition-reporter.yaml``).

Everything here is pure: :func:`evaluate` turns the reports and the Machine's gates into the
node conditions to publish and whether the node may take workloads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kokpit.api.conditions import CONDITION_TYPE_PATTERN, REASON_PATTERN

LABEL = "kokpit.io/node-conditions"
#: The taint that keeps a gated node unschedulable.
NOT_READY_TAINT = {"key": "kokpit.io/not-ready", "effect": "NoSchedule"}
#: Node conditions the kubelet (or KWOK) owns: reports of these are ignored, never published.
KUBELET_CONDITIONS = frozenset(
    {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"}
)


@dataclass(frozen=True)
class Report:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


@dataclass(frozen=True)
class Verdict:
    """What the gates say about a node."""

    #: Conditions to publish on the node (every valid report, in type order).
    conditions: tuple[Report, ...]
    #: Every gate that counts passes.
    passed: bool
    #: Every gate passes now (Bootstrap ones included): the node is bootstrapped from here on.
    all_passed: bool
    #: For a person: which gates hold the node back.
    message: str


def parse(configmap: Mapping[str, Any] | None) -> tuple[dict[str, Report], list[str]]:
    """The reports in a Condition ConfigMap by type, and what was wrong with the others."""
    reports: dict[str, Report] = {}
    problems: list[str] = []
    for key, value in sorted(((configmap or {}).get("data") or {}).items()):
        try:
            doc = json.loads(value)
            type_, status = doc["type"], doc["status"]
        except (ValueError, TypeError, KeyError):
            problems.append(f"{key}: not a JSON object with type and status")
            continue
        if not isinstance(type_, str) or not re.match(CONDITION_TYPE_PATTERN, type_):
            problems.append(f"{key}: {type_!r} is not a condition type")
        elif type_ in KUBELET_CONDITIONS:
            problems.append(f"{key}: {type_} belongs to the kubelet")
        elif status not in ("True", "False", "Unknown"):
            problems.append(f"{key}: status must be True, False or Unknown, not {status!r}")
        else:
            reason = str(doc.get("reason") or "")
            reports[type_] = Report(
                type_,
                status,
                reason if re.match(REASON_PATTERN, reason) else "Reported",
                str(doc.get("message") or "")[:1024],
            )
    return reports, problems


def evaluate(
    gates: Sequence[Mapping[str, Any]], reports: Mapping[str, Report], bootstrapped: bool
) -> Verdict:
    """Gate the node: each gate's condition must be True; once the node has bootstrapped
    (every gate passed once), Bootstrap gates no longer count."""
    holding: list[str] = []  # gates that count and do not pass
    all_passed = True
    for gate in gates:
        type_ = gate["conditionType"]
        report = reports.get(type_)
        if report is not None and report.status == "True":
            continue
        all_passed = False
        if not bootstrapped or gate.get("mode", "Continuous") == "Continuous":
            holding.append(f"{type_} is {report.status if report else 'not reported'}")
    return Verdict(
        conditions=tuple(reports[t] for t in sorted(reports)),
        passed=not holding,
        all_passed=all_passed,
        message="; ".join(holding) or "every readiness gate passes",
    )
