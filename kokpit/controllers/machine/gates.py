"""Readiness gating: the Condition ConfigMap format, and what the gates make of it.

Each joined Machine has one **Condition ConfigMap**: same namespace and name as the Machine,
labelled ``kokpit.io/node-conditions=true``, owned by the Machine (deleted with it), created
by the Machine-Operator when the node joins. Other operators report their sub-state of the node
there. A reporter is a ServiceAccount and writes exactly one key, named after itself,
``<namespace>.<name>`` (unambiguous: a namespace holds no dot); the value is a JSON list of
condition objects (a single object is accepted too)::

    data:
      network-system.network-operator: '[{"type": "example.com/NetworkReady",
        "status": "True", "reason": "RoutesProgrammed", "message": "12 routes"}]'

``type`` and ``status`` (True, False, Unknown) are required. Each gate of the Machine names
the reporter that owns it, and its condition is taken from that reporter's key only: a report
of a gate's type under any other key is ignored, and the Machine's message says so. That the
key is the writer's own is enforced by the API server, not here: the ValidatingAdmissionPolicy
``config/admission/node-condition-reports.yaml`` lets a ServiceAccount change only the key of
its own name (RBAC, ``config/rbac/node-condition-reporter.yaml``, cannot select keys).

Everything here is pure: :func:`parse` reads the reports and :func:`evaluate` turns them and the
Machine's gates into the node conditions to publish and whether the node may take workloads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kokpit.api.conditions import CONDITION_TYPE_PATTERN, REASON_PATTERN
from kokpit.api.v1alpha1.machine import KUBELET_CONDITIONS

LABEL = "kokpit.io/node-conditions"
#: The taint that keeps a gated node unschedulable.
NOT_READY_TAINT = {"key": "kokpit.io/not-ready", "effect": "NoSchedule"}


def registration_taints(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The taints a Machine's Node registers with: the Machine's own, and the not-ready taint
    while it has readiness gates (removed once they pass)."""
    taints = [dict(t) for t in spec.get("taints") or []]
    if spec.get("readinessGates"):
        taints.append(dict(NOT_READY_TAINT))
    return taints


#: A condition's message is cut to this many characters.
MAX_MESSAGE = 1024
#: At most this many problems are named: the rest are counted (a Machine's message is bounded).
MAX_PROBLEMS = 8
#: A verdict's message is cut to this many characters (a condition's message holds 32 KiB,
#: and the parse problems are added to it).
MAX_VERDICT = 16384
STATUSES = ("True", "False", "Unknown")


@dataclass(frozen=True)
class Report:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


#: The reports of a Condition ConfigMap: by reporter key (``<namespace>.<name>``), then by type.
Reports = Mapping[str, Mapping[str, Report]]


@dataclass(frozen=True)
class Verdict:
    """What the gates say about a node."""

    #: Conditions to publish on the node: each gate's condition as its reporter reported it
    #: (in type order; a gate not yet reported has none).
    conditions: tuple[Report, ...]
    #: Every gate that counts passes.
    passed: bool
    #: Every gate passes now (Bootstrap ones included): the node is bootstrapped from here on.
    all_passed: bool
    #: For a person: which gates hold the node back, and which reports were ignored.
    message: str


def reporter_key(gate: Mapping[str, Any]) -> str | None:
    """The Condition ConfigMap key of the ServiceAccount that owns ``gate``, or None when the
    gate names none (a Machine from before gates had reporters)."""
    reporter = gate.get("reporter")
    if not isinstance(reporter, Mapping):
        return None
    namespace, name = reporter.get("namespace"), reporter.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str):
        return None
    return f"{namespace}.{name}"


def parse(configmap: Mapping[str, Any] | None) -> tuple[dict[str, dict[str, Report]], list[str]]:
    """The reports in a Condition ConfigMap by key and type, and what was wrong with the
    others (each problem names its key; at most :data:`MAX_PROBLEMS` are named)."""
    reports: dict[str, dict[str, Report]] = {}
    problems: list[str] = []
    for key, value in sorted(((configmap or {}).get("data") or {}).items()):
        try:
            doc = json.loads(value)
        except (ValueError, TypeError):
            problems.append(f"{key}: not JSON")
            continue
        entries = doc if isinstance(doc, list) else [doc]
        by_type: dict[str, Report] = {}
        for i, entry in enumerate(entries):
            where = f"{key}[{i}]" if isinstance(doc, list) else key
            report = _report(entry)
            if isinstance(report, str):
                problems.append(f"{where}: {report}")
            elif report.type in by_type:
                problems.append(f"{where}: {report.type} is reported twice; the first counts")
            else:
                by_type[report.type] = report
        if by_type:
            reports[key] = by_type
    return reports, _bounded(problems)


def _report(entry: Any) -> Report | str:
    """One condition object as a Report, or what is wrong with it."""
    if not isinstance(entry, dict) or "type" not in entry or "status" not in entry:
        return "not a JSON object with type and status"
    type_, status = entry["type"], entry["status"]
    # fullmatch: re.match with "$" would accept a trailing newline ("Ready\n"), which the
    # API server's patterns do not.
    if not isinstance(type_, str) or not re.fullmatch(CONDITION_TYPE_PATTERN, type_):
        return f"{_quoted(type_)} is not a condition type"
    if len(type_) > 316:
        return "the condition type is longer than 316 characters"
    if type_ in KUBELET_CONDITIONS:
        return f"{type_} belongs to the kubelet"
    if status not in STATUSES:
        return f"status must be True, False or Unknown, not {_quoted(status)}"
    reason, message = entry.get("reason"), entry.get("message")
    if not (
        isinstance(reason, str) and len(reason) <= 1024 and re.fullmatch(REASON_PATTERN, reason)
    ):
        reason = "Reported"  # a reason is for programs: one they cannot parse is none
    return Report(type_, status, reason, message[:MAX_MESSAGE] if isinstance(message, str) else "")


def evaluate(gates: Sequence[Mapping[str, Any]], reports: Reports, bootstrapped: bool) -> Verdict:
    """Gate the node: each gate's condition, as its own reporter reports it, must be True; once
    the node has bootstrapped (every gate passed once), Bootstrap gates no longer count.
    Reports of a gate's type by anyone else are ignored and named in the message."""
    holding: list[str] = []  # gates that count and do not pass
    conditions: dict[str, Report] = {}
    owners: dict[str, str | None] = {}
    all_passed = True
    for gate in gates:
        type_ = gate["conditionType"]
        owner = owners[type_] = reporter_key(gate)
        report = reports.get(owner, {}).get(type_) if owner is not None else None
        if report is not None:
            conditions[type_] = report
            if report.status == "True":
                continue
        all_passed = False
        if not bootstrapped or gate.get("mode", "Continuous") == "Continuous":
            if owner is None:
                holding.append(f"{type_} names no reporter")
            elif report is None:
                holding.append(f"{type_} is not reported by {owner}")
            else:
                holding.append(f"{type_} is {report.status}")
    ignored = [
        f"{key} reports {type_}, which only {owners[type_]} may: ignored"
        for key, by_type in sorted(reports.items())
        for type_ in sorted(by_type)
        if type_ in owners and key != owners[type_]
    ]
    return Verdict(
        conditions=tuple(conditions[t] for t in sorted(conditions)),
        passed=not holding,
        all_passed=all_passed,
        message=_cut(
            "; ".join([*(holding or ["every readiness gate passes"]), *_bounded(ignored)])
        ),
    )


def _bounded(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], f"and {len(problems) - MAX_PROBLEMS} more"]


def _cut(text: str) -> str:
    return text if len(text) <= MAX_VERDICT else text[: MAX_VERDICT - 3] + "..."


def _quoted(value: Any) -> str:
    """A reporter's value in a message: quoted, and short (it is anyone's text)."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
