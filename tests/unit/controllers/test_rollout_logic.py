"""The Rollout-Operator's pure parts: batch sizes, the mark it leaves on what it changed, and
the order objects are taken in."""

from __future__ import annotations

from typing import Any

import pytest

from kokpit.api.v1alpha1.rollout import CHANGE_ANNOTATION
from kokpit.controllers.rollout import status as rollout_status
from kokpit.controllers.rollout.plan import (
    Change,
    batch_size,
    change_of,
    next_members,
    planned_sizes,
)
from kokpit.controllers.rollout.scope import RolloutScope

UID = "0b6e9a4e-5c1f-4a43-9d0a-1f2e3d4c5b6a"


def obj(name: str, annotation: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if annotation is not None:
        meta["annotations"] = {CHANGE_ANNOTATION: annotation}
    return {"metadata": meta}


@pytest.mark.parametrize(
    ("size", "total", "expected"),
    [("1", 10, 1), ("5", 3, 5), ("10%", 10, 1), ("10%", 11, 2), ("1%", 3, 1), ("100%", 7, 7)],
)
def test_batch_size_counts_or_rounds_a_share_up(size: str, total: int, expected: int) -> None:
    assert batch_size(size, total) == expected


@pytest.mark.parametrize(
    ("sizes", "total", "expected"),
    [
        (["1", "30%", "100%"], 10, [1, 3, 6]),
        (["2", "6", "1"], 12, [2, 6, 4]),  # the last takes everything left
        (["5", "5"], 3, [3, 0]),  # fewer objects than the canary
        (["100%"], 0, [0]),
    ],
)
def test_planned_sizes_end_with_everything_left(
    sizes: list[str], total: int, expected: list[int]
) -> None:
    assert planned_sizes(sizes, total) == expected
    assert sum(expected) == total


def test_a_mark_round_trips() -> None:
    change = Change(UID, 2, 3, "app-1.0.a")
    assert change_of(obj("m", str(change))) == change


@pytest.mark.parametrize(
    "value",
    [
        "",
        "nonsense",
        f"{UID}/0/0",  # no previous version
        f"{UID}/0/0/Not_A_Name",
        f"{UID}/x/0/v1",
        f"{UID}/0/0/v1/extra",
        f"{UID}/0/0/v1\n",
        "A" * 600,
    ],
)
def test_a_mark_that_does_not_parse_is_no_mark(value: str) -> None:
    assert change_of(obj("m", value)) is None


def test_no_annotation_is_no_mark() -> None:
    assert change_of(obj("m")) is None


def test_next_members_go_in_name_order() -> None:
    objs = [obj(n) for n in ("m-3", "m-1", "m-2")]
    assert [o["metadata"]["name"] for o in next_members(objs, 2)] == ["m-1", "m-2"]
    assert next_members(objs, 0) == []


def scope(status: dict[str, Any], analysis: bool = False) -> RolloutScope:
    spec: dict[str, Any] = {
        "target": {"kind": "Machine", "selector": {}, "packageVersion": "v2"},
        "batches": [{"size": "1"}, {"size": "100%"}],
    }
    if analysis:
        spec["analysis"] = {"prometheus": "http://p:9090", "metrics": []}
    return RolloutScope(
        {"metadata": {"name": "r", "uid": UID, "generation": 1}, "spec": spec, "status": status}
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, ("Unknown", "Starting")),
        (
            {"phase": "Progressing", "batches": [{"index": 0, "state": "Verifying", "size": 1}]},
            ("True", "BatchVerifying"),
        ),
        (
            {
                "phase": "Paused",
                "pausedReason": "AwaitingApproval",
                "batches": [{"index": 0, "state": "Pausing", "size": 1}],
            },
            ("False", "AwaitingApproval"),
        ),
        ({"phase": "Succeeded"}, ("False", "Succeeded")),
        ({"phase": "Aborted", "abortReason": "batch 0: m: broken"}, ("False", "Aborted")),
    ],
)
def test_progressing_says_whether_it_moves_and_why_not(
    status: dict[str, Any], expected: tuple[str, str]
) -> None:
    type_, value, reason, _ = rollout_status.progressing(scope(status))
    assert (type_, value, reason) == ("Progressing", *expected)


def reason_of(condition: tuple[str, str, str, str] | None) -> tuple[str, str] | None:
    return None if condition is None else (condition[1], condition[2])


def test_rolled_back_is_true_only_when_every_object_is_back() -> None:
    rolling = scope({"phase": "RollingBack", "abortReason": "x"})
    assert reason_of(rollout_status.rolled_back(rolling)) == ("False", "RollingBack")
    done = scope({"phase": "Aborted"})
    assert rollout_status.rolled_back(done) is None  # not judged in this reconcile: kept
    done.behind = ""
    assert reason_of(rollout_status.rolled_back(done)) == ("True", "RolledBack")
    done.behind = "not Ready on their previous version: m-1"
    assert reason_of(rollout_status.rolled_back(done)) == ("False", "RollbackIncomplete")


def test_analysis_passing_reports_failed_and_missing_measurements() -> None:
    batch = {"index": 0, "state": "Analyzing", "size": 1, "measured": 2}
    failed = {**batch, "failedMeasurements": 1}
    assert (
        rollout_status.analysis_passing(scope({"phase": "Progressing", "batches": [batch]})) is None
    )
    s = scope({"phase": "Progressing", "batches": [batch]}, analysis=True)
    assert reason_of(rollout_status.analysis_passing(s)) == ("True", "Passing")
    s = scope({"phase": "Aborted", "batches": [failed]}, analysis=True)
    assert reason_of(rollout_status.analysis_passing(s)) == ("False", "MetricFailed")
    s = scope({"phase": "Paused", "batches": [{**batch, "errorMeasurements": 3}]}, analysis=True)
    assert reason_of(rollout_status.analysis_passing(s)) == ("Unknown", "Inconclusive")
