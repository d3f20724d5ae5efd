"""The Rollout-Operator's pure parts: batch sizes, the mark it leaves on what it changed, and
the order objects are taken in."""

from __future__ import annotations

from typing import Any

import pytest

from kokpit.api.v1alpha1.rollout import CHANGE_ANNOTATION
from kokpit.controllers.rollout.plan import (
    Change,
    batch_size,
    change_of,
    next_members,
    planned_sizes,
)

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
