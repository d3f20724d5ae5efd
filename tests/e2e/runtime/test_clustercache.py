"""The cluster cache against real API servers: two business clusters (two more local control
planes, shared by the module) reached through Clusters of the meta-cluster and the kubeconfig
Secrets they control. No Cluster-Operator runs here: the tests write the Clusters' status and
their Secrets themselves, so they can rotate, break and delete them at will."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from fixtures.samples import cluster as cluster_manifest
from kokpit.api.v1alpha1 import CLUSTERS
from kokpit.local import Assets, Kubectl, LocalCluster
from kokpit.runtime import (
    Client,
    ClusterCache,
    ClusterCacheOptions,
    ClusterNotReady,
    ClusterUnreachable,
    Controller,
    Informer,
    Request,
    Resource,
    Result,
    Scope,
)
from kokpit.runtime.resources import CONFIGMAPS, SECRETS
from tests.e2e.runtime.proxy import Proxy

pytestmark = pytest.mark.usefixtures("kokpit_crds")
Object = dict[str, Any]
SELF_SUBJECT_REVIEWS = Resource(
    "authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", namespaced=False
)


@dataclass(frozen=True)
class Business:
    name: str
    cluster: LocalCluster
    kubectl: Kubectl

    @property
    def kubeconfig(self) -> str:
        return self.cluster.kubeconfig.read_text()

    @property
    def port(self) -> int:
        return int(str(self.cluster.server).rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def businesses(
    assets: Assets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Business]]:
    """Two business clusters (real control planes), for every test of the module."""
    started: list[Business] = []
    try:
        for name in ("alpha", "beta"):
            local = LocalCluster(tmp_path_factory.mktemp(name), name=name)
            started.append(Business(name, local, Kubectl(assets.bin("kubectl"), local.kubeconfig)))
            local.up(assets, progress=lambda _: None)
        yield started
    finally:
        for b in started:
            b.cluster.down()


def admin_secret(cluster: Object) -> str | None:
    return ((cluster.get("status") or {}).get("adminKubeconfigSecretRef") or {}).get("name")


def fast(**overrides: Any) -> ClusterCacheOptions:
    defaults: dict[str, Any] = {
        "secret_name": admin_secret,
        "health_interval": 0.3,
        "health_timeout": 2.0,
        "failure_threshold": 2,
        "min_backoff": 0.5,
        "max_backoff": 2.0,
        "connect_timeout": 15.0,
    }
    return ClusterCacheOptions(**(defaults | overrides))


@contextlib.asynccontextmanager
async def running(
    client: Client, namespace: str, options: ClusterCacheOptions
) -> AsyncIterator[ClusterCache]:
    """The Clusters informer of ``namespace`` and a cache over it, running."""
    clusters = Informer(client, Scope(CLUSTERS, namespace=namespace))
    cache = ClusterCache(client, clusters, options)
    tasks = [asyncio.create_task(clusters.start()), asyncio.create_task(cache.start())]
    await clusters.synced.wait()
    try:
        yield cache
    finally:
        for t in reversed(tasks):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def create_cluster(client: Client, namespace: str, name: str) -> Object:
    created = await client.create(CLUSTERS, cluster_manifest(namespace, name, "none", "process"))
    status = {"status": {"adminKubeconfigSecretRef": {"name": f"{name}-admin-kubeconfig"}}}
    await client.patch(CLUSTERS, name, status, namespace=namespace, subresource="status")
    return created


def kubeconfig_secret(
    cluster: Object,
    text: str,
    *,
    owner: Object | None = None,
    type_: str = "kokpit.io/kubeconfig",
) -> Object:
    """The Secret as the Cluster-Operator issues it (unless told another owner or type)."""
    meta = cluster["metadata"]
    owner_meta = (owner or cluster)["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": type_,
        "metadata": {
            "name": f"{meta['name']}-admin-kubeconfig",
            "namespace": meta["namespace"],
            "labels": {"kokpit.io/cluster": meta["name"]},
            "ownerReferences": [
                {
                    "apiVersion": "kokpit.io/v1alpha1",
                    "kind": "Cluster",
                    "name": owner_meta["name"],
                    "uid": owner_meta["uid"],
                    "controller": True,
                }
            ],
        },
        "data": {"value": base64.b64encode(text.encode()).decode()},
    }


def with_server(kubeconfig: str, server: str) -> str:
    doc = json.loads(kubeconfig)
    doc["clusters"][0]["cluster"]["server"] = server
    return json.dumps(doc)


def with_token(kubeconfig: str, token: str) -> str:
    doc = json.loads(kubeconfig)
    doc["users"][0]["user"] = {"token": token}
    return json.dumps(doc)


async def who(client: Client) -> str:
    review = await client.create(
        SELF_SUBJECT_REVIEWS,
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(review["status"]["userInfo"]["username"])


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {within} s: {what}")


class Recorder:
    """A reconciler that records the requests it gets."""

    def __init__(self) -> None:
        self.requests: set[str] = set()

    async def reconcile(self, request: Request) -> Result:
        self.requests.add(request.name)
        return Result()


# -- tests ----------------------------------------------------------------------------------


async def test_two_business_clusters_served_from_one_cache_with_events_mapped_to_their_keys(
    client: Client, namespace: str, businesses: list[Business]
) -> None:
    for b in businesses:
        created = await create_cluster(client, namespace, b.name)
        await client.create(SECRETS, kubeconfig_secret(created, b.kubeconfig))
    recorder = Recorder()
    controller = Controller("mapped", recorder)

    def mapper(cluster_key: str, obj: Object) -> list[Request]:
        name = obj["metadata"]["name"]
        if not name.startswith("probe-"):
            return []
        return [Request(namespace, f"{cluster_key.split('/')[1]}.{name}")]

    async with running(client, namespace, fast()) as cache:
        controller.watch(cache.watch(CONFIGMAPS, mapper, namespace="default"))
        task = asyncio.create_task(controller.start())
        try:
            # The watch connects every Cluster by itself: no get() needed.
            keys = [f"{namespace}/{b.name}" for b in businesses]
            await eventually(
                lambda: _true(cache.connected() == sorted(keys)), 30, "both clusters connected"
            )
            for b in businesses:
                b.kubectl.run("create", "configmap", f"probe-{b.name}", "-n", "default")
            want = {"alpha.probe-alpha", "beta.probe-beta"}
            await eventually(lambda: _true(recorder.requests >= want), 10, f"requests {want}")
            assert recorder.requests == want  # nothing from one cluster mapped to the other
            for b, key in zip(businesses, keys, strict=True):
                accessor = await cache.get(key)
                assert accessor.client.config.server == b.cluster.server
                assert await accessor.client.get(CONFIGMAPS, f"probe-{b.name}", namespace="default")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for b in businesses:
                b.kubectl.run("delete", "configmap", f"probe-{b.name}", "-n", "default")


async def test_a_rotated_secret_is_used_without_restart_and_informers_relist(
    client: Client, namespace: str, businesses: list[Business]
) -> None:
    alpha = businesses[0]
    created = await create_cluster(client, namespace, "rotating")
    await client.create(SECRETS, kubeconfig_secret(created, alpha.kubeconfig))
    key = f"{namespace}/rotating"
    async with running(client, namespace, fast()) as cache:
        before = await cache.get(key)
        assert await who(before.client) == "kokpit-admin"
        configmaps = before.informer(CONFIGMAPS, namespace="kube-system")
        await configmaps.wait_synced()
        # Rotate: same Secret, new credentials (a service account's token instead of the
        # admin's client certificate).
        alpha.kubectl.run("create", "serviceaccount", "rotated", "-n", "default")
        alpha.kubectl.run(
            "create", "clusterrolebinding", "rotated-view", "--clusterrole=view",
            "--serviceaccount=default:rotated",
        )  # fmt: skip
        token = alpha.kubectl.run("create", "token", "rotated", "-n", "default").strip()
        rotated = with_token(alpha.kubeconfig, token)
        value = base64.b64encode(rotated.encode()).decode()
        name = "rotating-admin-kubeconfig"
        await client.patch(SECRETS, name, {"data": {"value": value}}, namespace=namespace)

        async def rebuilt() -> bool:
            with contextlib.suppress(ClusterNotReady):
                return (await cache.get(key)) is not before
            return False

        took = await eventually(rebuilt, 5, "a new connection after the rotation")
        after = await cache.get(key)
        assert await who(after.client) == "system:serviceaccount:default:rotated"
        assert before.closed
        assert before.running_informers == 0
        # The old informer is gone; its successor lists again, on the new connection.
        relisted = after.informer(CONFIGMAPS, namespace="kube-system")
        assert relisted is not configmaps
        await asyncio.wait_for(relisted.wait_synced(), 10)
        assert relisted.relists == 1
        assert len(relisted.store) > 0
        print(f"rotation picked up in {took:.2f} s")


async def test_a_secret_the_cluster_does_not_control_or_of_another_type_is_refused(
    client: Client, namespace: str, businesses: list[Business]
) -> None:
    text = businesses[0].kubeconfig
    other = await create_cluster(client, namespace, "other")
    stray = await create_cluster(client, namespace, "stray")
    unowned = kubeconfig_secret(stray, text)
    del unowned["metadata"]["ownerReferences"]
    await client.create(SECRETS, unowned)
    foreign = await create_cluster(client, namespace, "foreign")
    await client.create(SECRETS, kubeconfig_secret(foreign, text, owner=other))
    opaque = await create_cluster(client, namespace, "opaque")
    await client.create(SECRETS, kubeconfig_secret(opaque, text, type_="Opaque"))
    expected = {
        "stray": "Cluster stray's kubeconfig Secret stray-admin-kubeconfig is not trusted: "
        "it has no controller owner (it must be issued for this Cluster)",
        "foreign": "Cluster foreign's kubeconfig Secret foreign-admin-kubeconfig is not trusted: "
        "its controller is Cluster other, not this Cluster",
        "opaque": "Cluster opaque's kubeconfig Secret opaque-admin-kubeconfig is not trusted: "
        "its type is Opaque, not kokpit.io/kubeconfig",
        "other": "Cluster other's kubeconfig Secret other-admin-kubeconfig does not exist",
    }
    async with running(client, namespace, fast()) as cache:
        for name, message in expected.items():
            with pytest.raises(ClusterNotReady) as refused:
                await cache.get(f"{namespace}/{name}")
            assert str(refused.value) == message
            assert not isinstance(refused.value, ClusterUnreachable)
        assert cache.connected() == []
        # Issued properly (a Secret's type cannot change: a new Secret), it is used at once.
        await client.delete(SECRETS, "opaque-admin-kubeconfig", namespace=namespace)
        await client.create(SECRETS, kubeconfig_secret(opaque, text))

        async def accepted() -> bool:
            with contextlib.suppress(ClusterNotReady):
                return await who((await cache.get(f"{namespace}/opaque")).client) != ""
            return False

        await eventually(accepted, 5, "the re-issued Secret used")


async def test_a_broken_kubeconfig_is_reported_without_its_content(
    client: Client, namespace: str, businesses: list[Business]
) -> None:
    created = await create_cluster(client, namespace, "broken")
    secret_text = "current-context: x\n  key: hunter2-SECRET-MATERIAL: [\n"
    await client.create(SECRETS, kubeconfig_secret(created, secret_text))
    async with running(client, namespace, fast()) as cache:
        with pytest.raises(ClusterNotReady) as refused:
            await cache.get(f"{namespace}/broken")
    message = str(refused.value)
    assert "Cluster broken's kubeconfig Secret broken-admin-kubeconfig" in message, message
    assert "hunter2" not in message
    assert "SECRET-MATERIAL" not in message


async def test_a_deleted_cluster_loses_its_informers_and_its_client(
    client: Client, namespace: str, businesses: list[Business]
) -> None:
    created = await create_cluster(client, namespace, "doomed")
    await client.create(SECRETS, kubeconfig_secret(created, businesses[1].kubeconfig))
    key = f"{namespace}/doomed"
    async with running(client, namespace, fast()) as cache:
        accessor = await cache.get(key)
        informer = accessor.informer(CONFIGMAPS, namespace="default")
        await asyncio.wait_for(informer.wait_synced(), 10)
        assert accessor.running_informers == 1
        assert cache.connected() == [key]
        await client.delete(CLUSTERS, "doomed", namespace=namespace)
        await eventually(
            lambda: _true(accessor.closed and accessor.running_informers == 0),
            5,
            "informers stopped and client closed",
        )
        assert cache.connected() == []
        with pytest.raises(ClusterNotReady, match=f"Cluster {key} does not exist"):
            await cache.get(key)


async def test_an_unreachable_cluster_is_reported_and_retried_with_backoff(
    client: Client, namespace: str, businesses: list[Business]
) -> None:
    beta = businesses[1]
    async with Proxy(beta.port) as proxy:
        created = await create_cluster(client, namespace, "flaky")
        text = with_server(beta.kubeconfig, f"https://127.0.0.1:{proxy.port}")
        await client.create(SECRETS, kubeconfig_secret(created, text))
        key = f"{namespace}/flaky"
        async with running(client, namespace, fast()) as cache:
            first = await cache.get(key)
            first.informer(CONFIGMAPS, namespace="default")
            proxy.block()  # the API server stops answering

            async def reported() -> bool:
                try:
                    await cache.get(key)
                except ClusterUnreachable:
                    return True
                return False

            await eventually(reported, 10, "the cluster reported unreachable")
            with pytest.raises(ClusterUnreachable) as unreachable:
                await cache.get(key)
            assert str(unreachable.value).startswith(
                f"Cluster {key}'s API server https://127.0.0.1:{proxy.port} failed 2 health "
                "checks in a row:"
            ), str(unreachable.value)
            assert first.closed
            assert first.running_informers == 0
            # Retried with backoff (0.5 s doubling to 2 s): a handful of attempts in 6 s,
            # not a tight loop; each attempt is one connection.
            attempts, connections = cache.attempts(key), proxy.connections
            await asyncio.sleep(6)
            tried = cache.attempts(key) - attempts
            assert 2 <= tried <= 6, tried
            # (at most one attempt straddles the window's edges)
            assert abs(proxy.connections - connections - tried) <= 1
            # Back: a retry connects again, with fresh informers.
            proxy.unblock()

            async def back() -> bool:
                with contextlib.suppress(ClusterNotReady):
                    return (await cache.get(key)) is not first
                return False

            await eventually(back, 5, "reconnected")
            again = (await cache.get(key)).informer(CONFIGMAPS, namespace="default")
            await asyncio.wait_for(again.wait_synced(), 10)


async def _true(value: bool) -> bool:
    return value
