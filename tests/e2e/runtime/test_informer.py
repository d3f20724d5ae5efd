"""Informers keep an exact copy of the server's objects through dropped connections, 410s and
an API server restart."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kokpit.local import LocalCluster
from kokpit.runtime import Client, ClientConfig, Informer, Scope, by_label
from kokpit.runtime.informer import Origin, event_origin
from kokpit.runtime.resources import CONFIGMAPS
from tests.e2e.runtime.proxy import Proxy


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_add(self, obj: dict[str, Any]) -> None:
        self.events.append(("add", obj["metadata"]["name"]))

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.events.append(("update", new["metadata"]["name"]))

    def on_delete(self, obj: dict[str, Any]) -> None:
        self.events.append(("delete", obj["metadata"]["name"]))

    def deleted(self) -> set[str]:
        return {name for kind, name in self.events if kind == "delete"}


def configmap(namespace: str, name: str, **labels: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "labels": labels}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"v": "0"}}


@pytest.fixture
async def proxy(local_cluster: LocalCluster) -> AsyncIterator[Proxy]:
    port = int(str(local_cluster.server).rsplit(":", 1)[1])
    async with Proxy(port) as p:
        yield p


@pytest.fixture
async def proxied(local_cluster: LocalCluster, proxy: Proxy) -> AsyncIterator[Client]:
    config = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    config = ClientConfig(**{**config.__dict__, "server": f"https://127.0.0.1:{proxy.port}"})
    async with Client(config) as c:
        yield c


async def converged(informer: Informer, client: Client, namespace: str) -> None:
    """Wait until the informer's store equals a fresh LIST, object for object."""
    for _ in range(200):
        truth = await client.list(CONFIGMAPS, namespace=namespace)
        want = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in truth.items}
        have = {
            o["metadata"]["name"]: o["metadata"]["resourceVersion"]
            for o in informer.store.list(namespace)
        }
        if want == have:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"informer did not converge: want {want}, have {have}")


async def test_dropped_connections_lose_no_event(
    client: Client, proxied: Client, proxy: Proxy, namespace: str
) -> None:
    informer = Informer(proxied, Scope(CONFIGMAPS, namespace=namespace))
    recorder = Recorder()
    informer.add_handler(recorder)
    task = asyncio.create_task(informer.start())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        for i in range(30):
            await client.create(CONFIGMAPS, configmap(namespace, f"cm-{i}"))
            if i % 7 == 3:
                proxy.cut()
        for i in range(0, 30, 3):
            await client.patch(CONFIGMAPS, f"cm-{i}", {"data": {"v": "1"}}, namespace=namespace)
            if i % 9 == 0:
                proxy.cut()
        for i in range(0, 30, 5):
            await client.delete(CONFIGMAPS, f"cm-{i}", namespace=namespace)
            proxy.cut()
        await converged(informer, client, namespace)
        assert proxy.cuts >= 10
        assert recorder.deleted() == {f"cm-{i}" for i in range(0, 30, 5)}
        adds = [name for kind, name in recorder.events if kind == "add" and name.startswith("cm-")]
        assert sorted(adds) == sorted(f"cm-{i}" for i in range(30)), "each add seen exactly once"
    finally:
        task.cancel()


async def test_410_after_compaction_and_api_server_restart_relists_with_deletes(
    client: Client, proxied: Client, proxy: Proxy, namespace: str, local_cluster: LocalCluster
) -> None:
    informer = Informer(proxied, Scope(CONFIGMAPS, namespace=namespace))
    recorder = Recorder()
    informer.add_handler(recorder)
    for i in range(5):
        await client.create(CONFIGMAPS, configmap(namespace, f"old-{i}"))
    task = asyncio.create_task(informer.start())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        await converged(informer, client, namespace)
        stale = informer.resource_version

        proxy.block()  # the informer is cut off while the world moves on
        await client.delete(CONFIGMAPS, "old-0", namespace=namespace)
        await client.delete(CONFIGMAPS, "old-1", namespace=namespace)
        await client.create(CONFIGMAPS, configmap(namespace, "born-while-away"))
        compact_etcd(local_cluster)  # the stale resourceVersion is gone from etcd ...
        await asyncio.to_thread(local_cluster.restart, "kube-apiserver")  # ... and the cache
        proxy.unblock()

        await converged(informer, client, namespace)
        assert informer.relists >= 2, "the watch from the stale version got 410 and relisted"
        assert {"old-0", "old-1"} <= recorder.deleted(), "deletes missed while away are emitted"
        assert ("add", "born-while-away") in recorder.events
        assert informer.resource_version != stale
    finally:
        task.cancel()


async def test_label_scoped_informer_with_index(client: Client, namespace: str) -> None:
    informer = Informer(client, Scope(CONFIGMAPS, namespace=namespace, label_selector="team"))
    informer.add_indexers({"team": by_label("team")})
    for i, team in enumerate(["red", "red", "blue"]):
        await client.create(CONFIGMAPS, configmap(namespace, f"t-{i}", team=team))
    await client.create(CONFIGMAPS, configmap(namespace, "unlabelled"))
    task = asyncio.create_task(informer.start())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        assert {o["metadata"]["name"] for o in informer.store.by_index("team", "red")} == {
            "t-0",
            "t-1",
        }
        assert informer.store.get(f"{namespace}/unlabelled") is None, "outside the selector"
        assert all("managedFields" not in o["metadata"] for o in informer.store.list())
    finally:
        task.cancel()


def compact_etcd(cluster: LocalCluster) -> None:
    """Compact etcd up to its current revision through its HTTP gateway."""
    port = json.loads(cluster.layout.state.read_text())["ports"]["etcd_client"]
    url = f"http://127.0.0.1:{port}/v3/kv"
    key = base64.b64encode(b"/").decode()
    head = _post(f"{url}/range", {"key": key, "limit": 1})
    _post(f"{url}/compaction", {"revision": head["header"]["revision"], "physical": True})


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


async def test_metadata_only_informer_with_a_field_selector(client: Client, namespace: str) -> None:
    for name in ("keep", "other"):
        await client.create(CONFIGMAPS, configmap(namespace, name))
    informer = Informer(
        client,
        Scope(
            CONFIGMAPS, namespace=namespace, field_selector="metadata.name=keep", metadata_only=True
        ),
    )
    task = asyncio.create_task(informer.start())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        (only,) = informer.store.list()
        assert only["metadata"]["name"] == "keep"
        assert only["kind"] == "PartialObjectMetadata"
        assert "data" not in only, "metadata only: the payload never crossed the wire"
        await client.patch(
            CONFIGMAPS, "keep", {"metadata": {"labels": {"seen": "yes"}}}, namespace=namespace
        )
        for _ in range(100):
            obj = informer.store.get(f"{namespace}/keep")
            if obj and (obj["metadata"].get("labels") or {}).get("seen") == "yes":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the metadata-only watch did not deliver the update")
    finally:
        task.cancel()


class OriginRecorder:
    """Records each event with what the informer said it was."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Origin]] = []

    def on_add(self, obj: dict[str, Any]) -> None:
        self.events.append(("add", obj["metadata"]["name"], event_origin()))

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.events.append(("update", new["metadata"]["name"], event_origin()))

    def on_delete(self, obj: dict[str, Any]) -> None:
        self.events.append(("delete", obj["metadata"]["name"], event_origin()))


async def test_events_tell_a_change_from_the_first_list_and_from_our_own_writes(
    client: Client, local_cluster: LocalCluster, namespace: str
) -> None:
    """What lets a controller put others' changes ahead of its own backlog: the informer's
    client made the echo of its own write, another client's write is a change, and the first
    list (or a replay to a late handler) is neither."""
    await client.create(CONFIGMAPS, configmap(namespace, "before", test="origin"))
    async with Client(ClientConfig.from_kubeconfig(local_cluster.kubeconfig)) as other:
        # Only this test's ConfigMaps (the namespace's kube-root-ca.crt comes and goes).
        scope = Scope(CONFIGMAPS, namespace=namespace, label_selector="test=origin")
        informer = Informer(client, scope)
        recorder = OriginRecorder()
        informer.add_handler(recorder)
        task = asyncio.create_task(informer.start())

        async def seen(count: int) -> None:
            """Each write's event in before the next write (a write of an object still in
            flight makes an event of it count as ours, whoever made it)."""
            for _ in range(600):  # a shared, busy machine can take seconds
                if len(recorder.events) >= count:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"no event {count} within 30 s: {recorder.events}")

        try:
            await asyncio.wait_for(informer.wait_synced(), 30)
            await client.create(CONFIGMAPS, configmap(namespace, "ours", test="origin"))
            await seen(2)
            await other.create(CONFIGMAPS, configmap(namespace, "theirs", test="origin"))
            await seen(3)
            await client.patch(CONFIGMAPS, "theirs", {"data": {"v": "1"}}, namespace=namespace)
            await seen(4)
            await other.patch(CONFIGMAPS, "ours", {"data": {"v": "1"}}, namespace=namespace)
            await seen(5)
            await other.delete(CONFIGMAPS, "before", namespace=namespace)
            await seen(6)
            late = OriginRecorder()
            informer.add_handler(late)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert recorder.events == [
        ("add", "before", Origin.LISTED),
        ("add", "ours", Origin.OWN_WRITE),
        ("add", "theirs", Origin.CHANGE),
        ("update", "theirs", Origin.OWN_WRITE),
        ("update", "ours", Origin.CHANGE),
        ("delete", "before", Origin.CHANGE),
    ]
    assert sorted(late.events) == [
        ("add", "ours", Origin.LISTED),
        ("add", "theirs", Origin.LISTED),
    ]
