"""The patch helper writes what changed, only that, and never loses another's finalizer."""

from __future__ import annotations

import copy

import pytest

from fixtures.samples import widget
from kokpit.runtime import Client, Conflict, Resource
from kokpit.runtime import metrics as m
from kokpit.runtime.patch import PatchHelper


def patches(client: Client) -> float:
    host = client.config.server.split("://")[1]
    return (
        m.REGISTRY.get_sample_value(
            "rest_client_requests_total", {"code": "200", "method": "PATCH", "host": host}
        )
        or 0.0
    )


async def test_one_write_per_changed_part_and_none_when_unchanged(
    client: Client, namespace: str, widget_crd: Resource
) -> None:
    obj = await client.create(widget_crd, widget(namespace, "w"))
    helper = PatchHelper(client, widget_crd, obj)
    before = patches(client)
    assert await helper.patch(copy.deepcopy(obj)) is None
    assert patches(client) == before, "nothing changed, nothing written"

    obj["metadata"].setdefault("finalizers", []).append("kokpit.io/test")
    obj["metadata"]["labels"] = {"stage": "one"}
    obj["status"] = {"observedGeneration": 1, "count": 7}
    written = await helper.patch(obj)
    assert patches(client) == before + 2, "one metadata patch, one status patch"
    assert written is not None
    fresh = await client.get(widget_crd, "w", namespace=namespace)
    assert fresh["metadata"]["finalizers"] == ["kokpit.io/test"]
    assert fresh["metadata"]["labels"] == {"stage": "one"}
    assert fresh["status"] == {"observedGeneration": 1, "count": 7}
    assert fresh["spec"] == {"size": 1}
    await client.patch(widget_crd, "w", {"metadata": {"finalizers": None}}, namespace=namespace)


async def test_a_finalizer_change_from_stale_state_conflicts(
    client: Client, namespace: str, widget_crd: Resource
) -> None:
    obj = await client.create(widget_crd, widget(namespace, "w"))
    helper = PatchHelper(client, widget_crd, obj)
    # Another controller adds its finalizer after we read the object.
    await client.patch(
        widget_crd, "w", {"metadata": {"finalizers": ["other.io/keep"]}}, namespace=namespace
    )
    obj["metadata"]["finalizers"] = ["kokpit.io/test"]
    with pytest.raises(Conflict):
        await helper.patch(obj)
    fresh = await client.get(widget_crd, "w", namespace=namespace)
    assert fresh["metadata"]["finalizers"] == ["other.io/keep"], "theirs was not overwritten"
    await client.patch(widget_crd, "w", {"metadata": {"finalizers": None}}, namespace=namespace)


async def test_a_status_computed_from_a_stale_read_conflicts(
    client: Client, namespace: str, widget_crd: Resource
) -> None:
    obj = await client.create(widget_crd, widget(namespace, "w"))
    # A reconcile writes a status...
    first = PatchHelper(client, widget_crd, copy.deepcopy(obj))
    await first.patch({**copy.deepcopy(obj), "status": {"count": 2}})
    # ...and the next one starts from a cache that has not seen that write yet.
    stale = PatchHelper(client, widget_crd, copy.deepcopy(obj))
    with pytest.raises(Conflict):
        await stale.patch({**copy.deepcopy(obj), "status": {"count": 1}})
    fresh = await client.get(widget_crd, "w", namespace=namespace)
    assert fresh["status"] == {"count": 2}, "the newer status stands"
