"""Controllers on the real API server: conflicts retried from fresh state, owners mapped,
terminal errors not retried, 429s honoured, metrics counted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from fixtures.samples import widget
from kokpit.local import Kubectl, LocalCluster
from kokpit.runtime import (
    Client,
    ClientConfig,
    Conflict,
    Controller,
    ControllerOptions,
    Informer,
    Manager,
    ManagerOptions,
    Request,
    Resource,
    Result,
    Scope,
    TerminalError,
    for_owner,
)
from kokpit.runtime import metrics as m
from kokpit.runtime.resources import CONFIGMAPS


def sample(metric: str, **labels: str) -> float:
    value = m.REGISTRY.get_sample_value(metric, labels)
    return value or 0.0


async def wait_for(check: Any, seconds: float = 30) -> None:
    for _ in range(int(seconds * 10)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


class CountingReconciler:
    """Copies generation to status with a conditional write of the object it read from the
    cache — and, once, is raced by another writer between its read and its write."""

    def __init__(self, client: Client, informer: Informer, widgets: Resource) -> None:
        self.client, self.informer, self.widgets = client, informer, widgets
        self.attempts = 0
        self.raced = False

    async def reconcile(self, request: Request) -> Result:
        self.attempts += 1
        obj = self.informer.store.get(request.key)
        if obj is None:
            return Result()
        if not self.raced:  # another writer changes the object after we read it
            self.raced = True
            await self.client.patch(
                self.widgets,
                request.name,
                {"metadata": {"labels": {"x": "y"}}},
                namespace=request.namespace,
            )
        status = {**obj, "status": {"observedGeneration": obj["metadata"]["generation"]}}
        await self.client.replace(self.widgets, status, subresource="status")  # may Conflict
        return Result()


async def test_a_conflict_is_retried_from_fresh_state(
    client: Client, namespace: str, widget_crd: Resource
) -> None:
    informer = Informer(client, Scope(widget_crd, namespace=namespace))
    reconciler = CountingReconciler(client, informer, widget_crd)
    controller = Controller(f"widgets-{namespace}", reconciler).watch(informer)
    requeues_before = sample(
        "controller_runtime_reconcile_total", controller=controller.name, result="requeue"
    )
    tasks = [asyncio.create_task(informer.start()), asyncio.create_task(controller.start())]
    try:
        await client.create(widget_crd, widget(namespace, "w"))

        async def reconciled() -> bool:
            got = await client.get(widget_crd, "w", namespace=namespace)
            return bool(got.get("status", {}).get("observedGeneration") == 1)

        await wait_for(reconciled)
        assert reconciler.attempts >= 2
        requeues = sample(
            "controller_runtime_reconcile_total", controller=controller.name, result="requeue"
        )
        assert requeues - requeues_before >= 1, "the conflict was requeued (not an error)"
        assert sample("controller_runtime_reconcile_errors_total", controller=controller.name) == 0
        assert (
            sample(
                "controller_runtime_reconcile_total", controller=controller.name, result="success"
            )
            >= 1
        )
        assert sample("workqueue_adds_total", name=controller.name, controller=controller.name) >= 2
    finally:
        for t in tasks:
            t.cancel()


class OwnerReconciler:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def reconcile(self, request: Request) -> Result:
        self.seen.append(request.name)
        if request.name == "bad":
            raise TerminalError("bad widget: nothing to retry")
        return Result()


async def test_owned_objects_enqueue_their_owner_and_terminal_errors_are_not_retried(
    client: Client, namespace: str, widget_crd: Resource
) -> None:
    owner = await client.create(widget_crd, widget(namespace, "parent"))
    bad = await client.create(widget_crd, widget(namespace, "bad"))
    widgets = Informer(client, Scope(widget_crd, namespace=namespace))
    configmaps = Informer(client, Scope(CONFIGMAPS, namespace=namespace))
    reconciler = OwnerReconciler()
    controller = (
        Controller(
            f"owners-{namespace}", reconciler, ControllerOptions(max_concurrent_reconciles=2)
        )
        .watch(widgets)
        .watch(configmaps, for_owner("Widget", "test.kokpit.io"))
    )
    tasks = [asyncio.create_task(t.start()) for t in (widgets, configmaps, controller)]
    try:
        await asyncio.sleep(1)
        first = list(reconciler.seen)
        assert sorted(first) == ["bad", "parent"]
        ref = {
            "apiVersion": "test.kokpit.io/v1",
            "kind": "Widget",
            "name": "parent",
            "uid": owner["metadata"]["uid"],
            "controller": True,
        }
        await client.create(
            CONFIGMAPS,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "child", "namespace": namespace, "ownerReferences": [ref]},
            },
        )
        await asyncio.sleep(1)
        assert reconciler.seen[len(first) :] == ["parent"], "the child enqueued its owner only"
        assert reconciler.seen.count("bad") == 1, f"terminal error not retried ({bad['kind']})"
    finally:
        for t in tasks:
            t.cancel()


async def test_manager_serves_health_readiness_and_metrics(
    client: Client, namespace: str, widget_crd: Resource
) -> None:
    manager = Manager(client, ManagerOptions())
    informer = manager.cache.informer(widget_crd, namespace=namespace)
    assert manager.cache.informer(widget_crd, namespace=namespace) is informer, "shared"
    reconciler = OwnerReconciler()
    manager.add(Controller(f"mgr-{namespace}", reconciler).watch(informer))
    task = asyncio.create_task(manager.start())
    try:
        await asyncio.wait_for(manager.started.wait(), 10)
        await asyncio.wait_for(informer.synced.wait(), 10)
        base = f"http://127.0.0.1:{manager.health_port}"
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/readyz"):
                async with http.get(base + path) as resp:
                    assert resp.status == 200, path
            await client.create(widget_crd, widget(namespace, "seen"))
            await wait_for(lambda: _true(reconciler.seen == ["seen"]))
            async with http.get(base + "/metrics") as resp:
                text = await resp.text()
        for name in (
            "workqueue_depth",
            "workqueue_adds_total",
            "workqueue_queue_duration_seconds",
            "controller_runtime_reconcile_total",
            "controller_runtime_reconcile_time_seconds",
            "controller_runtime_reconcile_errors_total",
            "rest_client_requests_total",
        ):
            assert f"\n{name}" in text, name
    finally:
        task.cancel()


async def _true(value: bool) -> bool:
    return value


@pytest.fixture
async def throttled_client(
    kubectl: Kubectl, local_cluster: LocalCluster, namespace: str
) -> AsyncIterator[Client]:
    """A client whose service account API Priority and Fairness squeezes into ~1 seat and
    rejects the rest with 429 — the API server's real throttling, not a stand-in."""
    sa = "flooder"
    level = f"kokpit-test-{namespace}"
    kubectl.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": sa, "namespace": namespace},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": sa, "namespace": namespace},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": sa, "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
            },
            {
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                "kind": "PriorityLevelConfiguration",
                "metadata": {"name": level},
                "spec": {
                    "type": "Limited",
                    "limited": {
                        "nominalConcurrencyShares": 1,
                        "lendablePercent": 0,
                        "limitResponse": {"type": "Reject"},
                    },
                },
            },
            {
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                "kind": "FlowSchema",
                "metadata": {"name": level},
                "spec": {
                    "priorityLevelConfiguration": {"name": level},
                    "matchingPrecedence": 100,
                    "distinguisherMethod": {"type": "ByUser"},
                    "rules": [
                        {
                            "subjects": [
                                {
                                    "kind": "ServiceAccount",
                                    "serviceAccount": {"name": sa, "namespace": namespace},
                                }
                            ],
                            "resourceRules": [
                                {
                                    "verbs": ["*"],
                                    "apiGroups": ["*"],
                                    "resources": ["*"],
                                    "namespaces": ["*"],
                                }
                            ],
                        }
                    ],
                },
            },
        ]
    )
    token = kubectl.run("create", "token", sa, "-n", namespace).strip()
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    config = ClientConfig(
        server=admin.server, ca_data=admin.ca_data, token=token, qps=10_000, burst=10_000
    )
    try:
        async with Client(config) as c:
            yield c
    finally:
        kubectl.run("delete", "flowschema,prioritylevelconfiguration", level, "--ignore-not-found")


async def test_429_is_honoured_and_every_request_succeeds(
    throttled_client: Client, client: Client, namespace: str
) -> None:
    for i in range(50):
        await client.create(
            CONFIGMAPS,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"c{i}", "namespace": namespace},
                "data": {"blob": "x" * 2000},
            },
        )
    host = throttled_client.config.server.split("://")[1]
    before = sample("rest_client_requests_total", code="429", method="GET", host=host)
    results = await asyncio.gather(
        *(throttled_client.list(CONFIGMAPS, namespace=namespace) for _ in range(60))
    )
    assert all(len(r.items) >= 50 for r in results), "every request eventually succeeded"
    throttled = sample("rest_client_requests_total", code="429", method="GET", host=host) - before
    assert throttled > 0, "the API server did throttle (else this test proves nothing)"
    print(json.dumps({"429s": throttled}))


async def test_conflict_error_type(client: Client, namespace: str) -> None:
    cm = await client.create(
        CONFIGMAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": namespace},
        },
    )
    await client.patch(CONFIGMAPS, "c", {"data": {"a": "b"}}, namespace=namespace)
    with pytest.raises(Conflict, match="the object has been modified"):
        await client.replace(CONFIGMAPS, cm)
