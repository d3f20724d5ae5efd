"""The runtime's API client against the real API server."""

from __future__ import annotations

import pytest

from fixtures.samples import widget
from kokpit.runtime import (
    AlreadyExists,
    Client,
    Conflict,
    Invalid,
    NotFound,
    PatchType,
    Resource,
)
from kokpit.runtime.resources import CONFIGMAPS


def configmap(namespace: str, name: str, **data: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


async def test_crud_with_typed_errors(client: Client, namespace: str) -> None:
    created = await client.create(CONFIGMAPS, configmap(namespace, "a", x="1"))
    with pytest.raises(AlreadyExists):
        await client.create(CONFIGMAPS, configmap(namespace, "a"))

    merged = await client.patch(CONFIGMAPS, "a", {"data": {"y": "2"}}, namespace=namespace)
    assert merged["data"] == {"x": "1", "y": "2"}
    jsonpatched = await client.patch(
        CONFIGMAPS,
        "a",
        [{"op": "remove", "path": "/data/x"}],
        namespace=namespace,
        patch_type=PatchType.JSON,
    )
    assert jsonpatched["data"] == {"y": "2"}
    applied = await client.apply(CONFIGMAPS, configmap(namespace, "a", z="3"), field_manager="t")
    assert applied["data"] == {"y": "2", "z": "3"}

    with pytest.raises(Conflict):  # written with a resourceVersion that is no longer current
        await client.replace(CONFIGMAPS, created)
    with pytest.raises(Conflict):  # precondition on a uid that is not this object's
        await client.delete(CONFIGMAPS, "a", namespace=namespace, uid="not-the-uid")
    await client.delete(CONFIGMAPS, "a", namespace=namespace, uid=created["metadata"]["uid"])
    with pytest.raises(NotFound):
        await client.get(CONFIGMAPS, "a", namespace=namespace)


async def test_invalid_carries_the_api_servers_message(client: Client, namespace: str) -> None:
    with pytest.raises(Invalid) as e:
        await client.create(CONFIGMAPS, configmap(namespace, "Not_A_Valid_Name"))
    assert "Not_A_Valid_Name" in e.value.message
    assert "RFC 1123" in e.value.message
    assert e.value.causes[0]["field"] == "metadata.name"


async def test_list_follows_pages(client: Client, namespace: str) -> None:
    for i in range(23):
        await client.create(CONFIGMAPS, configmap(namespace, f"cm-{i}"))
    listed = await client.list(CONFIGMAPS, namespace=namespace, limit=5)
    names = {o["metadata"]["name"] for o in listed.items}
    assert {f"cm-{i}" for i in range(23)} <= names
    assert all(o["kind"] == "ConfigMap" for o in listed.items)
    assert int(listed.resource_version) > 0


async def test_status_subresource_and_metadata_only(
    client: Client, namespace: str, widget_crd: Resource
) -> None:
    await client.create(widget_crd, widget(namespace, "w", size=3))
    status = {**widget(namespace, "w"), "status": {"observedGeneration": 1}}
    del status["spec"]
    written = await client.apply(widget_crd, status, field_manager="t", subresource="status")
    assert written["status"] == {"observedGeneration": 1}
    assert written["spec"] == {"size": 3}, "a status write leaves spec alone"
    meta = await client.get(widget_crd, "w", namespace=namespace, metadata_only=True)
    assert meta["kind"] == "PartialObjectMetadata"
    assert "spec" not in meta
