from typing import Any

import pytest

from kokpit.runtime.patch import merge_patch


@pytest.mark.parametrize(
    ("before", "after", "patch"),
    [
        ({"a": 1}, {"a": 1}, None),
        ({"a": 1}, {"a": 2}, {"a": 2}),
        ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
        ({}, {"a": {"b": 1}}, {"a": {"b": 1}}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, {"a": {"c": 3}}),
        ({"l": [1, 2]}, {"l": [1, 2, 3]}, {"l": [1, 2, 3]}),  # lists are replaced whole
        ({"a": {"b": 1}}, {"a": {}}, {"a": {"b": None}}),
        ({"a": "x"}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ],
)
def test_merge_patch(before: Any, after: Any, patch: Any) -> None:
    assert merge_patch(before, after) == patch


def apply(doc: Any, patch: Any) -> Any:
    """RFC 7386 apply, to check the diff round-trips."""
    if not isinstance(patch, dict):
        return patch
    out = dict(doc) if isinstance(doc, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = apply(out.get(k), v)
    return out


def test_round_trip() -> None:
    before = {
        "metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
        "status": {"phase": "Pending", "conditions": [{"type": "Ready"}]},
    }
    after = {
        "metadata": {"labels": {"a": "1", "c": "3"}, "finalizers": ["x", "y"]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready"}], "endpoint": "e"},
    }
    assert apply(before, merge_patch(before, after)) == after
