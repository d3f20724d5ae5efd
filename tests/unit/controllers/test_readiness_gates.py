"""The Condition ConfigMap format and the gates' verdict: who may pass a gate, and what a
report must look like (the API server enforces who writes which key; see the e2e tests)."""

import json
from typing import Any

import pytest

from kokpit.controllers.machine import gates
from kokpit.controllers.machine.gates import Report

NET = "network-system.network-operator"  # <namespace>.<name> of the reporters' ServiceAccounts
DISK = "storage-system.storage-operator"


def cond(type_: Any, status: Any = "True", **extra: Any) -> dict[str, Any]:
    return {"type": type_, "status": status, **extra}


def gate(type_: str, owner: str | None, mode: str = "Continuous") -> dict[str, Any]:
    out: dict[str, Any] = {"conditionType": type_, "mode": mode}
    if owner is not None:
        namespace, name = owner.split(".", 1)
        out["reporter"] = {"namespace": namespace, "name": name}
    return out


@pytest.mark.parametrize(
    ("value", "reports", "problem"),
    [
        # A list of conditions, or one condition.
        (
            [cond("example.com/NetworkReady", reason="Routes"), cond("example.com/Mtu", "False")],
            {
                "example.com/NetworkReady": Report(
                    "example.com/NetworkReady", "True", "Routes", ""
                ),
                "example.com/Mtu": Report("example.com/Mtu", "False", "Reported", ""),
            },
            None,
        ),
        (
            cond("DiskReady", "Unknown", reason="Probing", message="m"),
            {"DiskReady": Report("DiskReady", "Unknown", "Probing", "m")},
            None,
        ),
        # A trailing newline is not part of a valid type (re.match with "$" accepted it).
        (cond("Ready\n"), {}, 'NET: "Ready\\n" is not a condition type'),
        (cond("DiskReady\n"), {}, 'NET: "DiskReady\\n" is not a condition type'),
        (cond("example.com/Net Ready"), {}, "is not a condition type"),
        (cond("a" * 317), {}, "longer than 316 characters"),
        (cond(7), {}, "NET: 7 is not a condition type"),
        (cond("Ready", "False"), {}, "NET: Ready belongs to the kubelet"),
        (cond("DiskReady", "Maybe"), {}, 'status must be True, False or Unknown, not "Maybe"'),
        (cond("DiskReady", None), {}, "not null"),
        ({"type": "DiskReady"}, {}, "NET: not a JSON object with type and status"),
        (42, {}, "NET: not a JSON object with type and status"),
        ("{not json", {}, "NET: not JSON"),
        # In a list, each entry stands alone, and the problem names its index.
        (
            [cond("DiskReady"), "junk"],
            {"DiskReady": Report("DiskReady", "True", "Reported", "")},
            "NET[1]: not a JSON object with type and status",
        ),
        (
            [cond("DiskReady"), cond("DiskReady", "False")],
            {"DiskReady": Report("DiskReady", "True", "Reported", "")},
            "NET[1]: DiskReady is reported twice; the first counts",
        ),
        # Reasons a program cannot parse are replaced; messages are cut; non-strings dropped.
        (
            cond("DiskReady", reason="Probed\n", message="x" * 5000),
            {"DiskReady": Report("DiskReady", "True", "Reported", "x" * gates.MAX_MESSAGE)},
            None,
        ),
        (
            cond("DiskReady", reason=["R"], message={"m": 1}),
            {"DiskReady": Report("DiskReady", "True", "Reported", "")},
            None,
        ),
    ],
)
def test_reports_are_parsed_and_bad_ones_explained(
    value: Any, reports: dict[str, Report], problem: str | None
) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    parsed, problems = gates.parse({"data": {NET: text}})
    assert parsed == ({NET: reports} if reports else {})
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problem.replace("NET", NET) in problems[0]


def test_problems_are_bounded_and_counted() -> None:
    data = {f"ns.reporter-{i:02d}": "junk" for i in range(20)}
    reports, problems = gates.parse({"data": data})
    assert reports == {}
    assert len(problems) == gates.MAX_PROBLEMS + 1
    assert problems[-1] == f"and {20 - gates.MAX_PROBLEMS} more"


def test_a_missing_configmap_has_no_reports() -> None:
    assert gates.parse(None) == ({}, [])
    assert gates.parse({"metadata": {}}) == ({}, [])


def r(type_: str, status: str = "True") -> Report:
    return Report(type_, status, "R", "")  # type: ignore[arg-type]


NET_GATE = gate("example.com/NetworkReady", NET)
DISK_GATE = gate("DiskReady", DISK, mode="Bootstrap")


@pytest.mark.parametrize(
    ("gate_list", "reports", "bootstrapped", "passed", "published", "message"),
    [
        # The owner reports True: the gate passes, and its condition is published.
        (
            [NET_GATE],
            {NET: {"example.com/NetworkReady": r("example.com/NetworkReady")}},
            False,
            True,
            ["example.com/NetworkReady"],
            "every readiness gate passes",
        ),
        # Another reporter reports the gate's type True: ignored, named, not published.
        (
            [NET_GATE],
            {DISK: {"example.com/NetworkReady": r("example.com/NetworkReady")}},
            False,
            False,
            [],
            f"example.com/NetworkReady is not reported by {NET}; {DISK} reports "
            f"example.com/NetworkReady, which only {NET} may: ignored",
        ),
        # ...even when the owner says False: the owner's report is the one that counts.
        (
            [NET_GATE],
            {
                NET: {"example.com/NetworkReady": r("example.com/NetworkReady", "False")},
                DISK: {"example.com/NetworkReady": r("example.com/NetworkReady")},
                "zz.zz": {"example.com/NetworkReady": r("example.com/NetworkReady")},
            },
            False,
            False,
            ["example.com/NetworkReady"],
            "example.com/NetworkReady is False; "
            f"{DISK} reports example.com/NetworkReady, which only {NET} may: ignored; "
            f"zz.zz reports example.com/NetworkReady, which only {NET} may: ignored",
        ),
        # A key that is the owner's with a suffix is not the owner's.
        (
            [NET_GATE],
            {f"{NET}x": {"example.com/NetworkReady": r("example.com/NetworkReady")}},
            False,
            False,
            [],
            f"{NET}x reports",
        ),
        # A gate without a reporter (a Machine from before reporters) never passes.
        (
            [gate("DiskReady", None)],
            {DISK: {"DiskReady": r("DiskReady")}},
            False,
            False,
            [],
            "DiskReady names no reporter",
        ),
        # Conditions that are no gate's are not published, whoever reports them.
        (
            [NET_GATE],
            {NET: {"example.com/NetworkReady": r("example.com/NetworkReady"), "Extra": r("Extra")}},
            False,
            True,
            ["example.com/NetworkReady"],
            "every readiness gate passes",
        ),
        # A Bootstrap gate: holds a new node back...
        (
            [NET_GATE, DISK_GATE],
            {NET: {"example.com/NetworkReady": r("example.com/NetworkReady")}},
            False,
            False,
            ["example.com/NetworkReady"],
            f"DiskReady is not reported by {DISK}",
        ),
        # ...but not a bootstrapped one.
        (
            [NET_GATE, DISK_GATE],
            {
                NET: {"example.com/NetworkReady": r("example.com/NetworkReady")},
                DISK: {"DiskReady": r("DiskReady", "False")},
            },
            True,
            True,
            ["DiskReady", "example.com/NetworkReady"],
            "every readiness gate passes",
        ),
        # A Continuous gate turning False gates a bootstrapped node again.
        (
            [NET_GATE, DISK_GATE],
            {
                NET: {"example.com/NetworkReady": r("example.com/NetworkReady", "Unknown")},
                DISK: {"DiskReady": r("DiskReady")},
            },
            True,
            False,
            ["DiskReady", "example.com/NetworkReady"],
            "example.com/NetworkReady is Unknown",
        ),
    ],
)
def test_a_gate_passes_only_on_its_own_reporters_report(
    gate_list: list[dict[str, Any]],
    reports: gates.Reports,
    bootstrapped: bool,
    passed: bool,
    published: list[str],
    message: str,
) -> None:
    verdict = gates.evaluate(gate_list, reports, bootstrapped)
    assert verdict.passed is passed
    assert [c.type for c in verdict.conditions] == published
    assert message in verdict.message


def test_all_passed_counts_bootstrap_gates_too() -> None:
    both = {
        NET: {"example.com/NetworkReady": r("example.com/NetworkReady")},
        DISK: {"DiskReady": r("DiskReady", "False")},
    }
    assert not gates.evaluate([NET_GATE, DISK_GATE], both, True).all_passed
    both[DISK] = {"DiskReady": r("DiskReady")}
    assert gates.evaluate([NET_GATE, DISK_GATE], both, False).all_passed


def test_the_verdict_names_only_a_bounded_number_of_ignored_reports() -> None:
    reports = {f"ns.r{i:02d}": {"DiskReady": r("DiskReady")} for i in range(30)}
    verdict = gates.evaluate([DISK_GATE], reports, False)
    assert not verdict.passed
    assert verdict.message.count("ignored") == gates.MAX_PROBLEMS
    assert verdict.message.endswith(f"and {30 - gates.MAX_PROBLEMS} more")


def test_the_parsed_configmap_feeds_the_verdict() -> None:
    """The two together, as the Machine-Operator uses them."""
    data = {
        NET: json.dumps([cond("example.com/NetworkReady")]),
        DISK: json.dumps(cond("example.com/NetworkReady")),
    }
    reports, problems = gates.parse({"data": data})
    assert problems == []
    verdict = gates.evaluate([NET_GATE], reports, False)
    assert verdict.passed
    assert f"{DISK} reports example.com/NetworkReady" in verdict.message


def test_the_verdicts_message_is_bounded() -> None:
    """32 gates with the longest types and reporters fit in a condition's message."""
    owner = f"{'n' * 63}.{'s' * 253}"
    long_gates = [gate(f"{'d' * 250}.example.com/{i:02d}{'T' * 60}", owner) for i in range(32)]
    reports = {
        f"x{i}.y": {g["conditionType"]: r(g["conditionType"]) for g in long_gates}
        for i in range(30)
    }
    verdict = gates.evaluate(long_gates, reports, False)
    assert not verdict.passed
    assert len(verdict.message) <= gates.MAX_VERDICT
