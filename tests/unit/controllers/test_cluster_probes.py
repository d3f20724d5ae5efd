"""The probes of process-runtime control planes: spread over the interval, bounded, and what
they report (no cluster: a fake runtime and an informer's store filled by hand)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from kokpit.api.v1alpha1 import CLUSTERS
from kokpit.controllers.cluster.options import ClusterOptions
from kokpit.controllers.cluster.watches import ProbeMonitor
from kokpit.providers.controlplane import (
    NOT_RUNNING,
    UNHEALTHY,
    ComponentHealth,
    ComponentName,
    ComponentPlan,
    ControlPlane,
)
from kokpit.runtime import Client
from kokpit.runtime.informer import Informer, Scope


def cluster(name: str, *, ready: bool = True, runtime: str = "process") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}"},
        "spec": {"runtime": runtime},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


class Runtime:
    """Components healthy unless told otherwise; counts probes running at once."""

    def __init__(self, broken: dict[str, ComponentHealth]) -> None:
        self.broken = broken
        self.running = 0
        self.most = 0
        self.started: dict[str, list[float]] = {}

    async def apply(self, cp: ControlPlane, plan: ComponentPlan) -> None:
        raise NotImplementedError

    async def endpoint(self, cp: ControlPlane) -> str | None:
        return None

    async def delete(self, cp: ControlPlane) -> None:
        raise NotImplementedError

    async def health(self, cp: ControlPlane, name: ComponentName) -> ComponentHealth:
        loop = asyncio.get_running_loop()
        if name == "etcd":
            self.started.setdefault(cp.name, []).append(loop.time())
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.005)
        finally:
            self.running -= 1
        if name == "kube-scheduler" and cp.name in self.broken:
            return self.broken[cp.name]
        return ComponentHealth(True, "v1", plan="p")


class Enqueued:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.first = asyncio.Event()

    def on_add(self, obj: dict[str, Any]) -> None:
        self.names.append(obj["metadata"]["name"])
        self.first.set()

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        raise AssertionError("only adds")

    def on_delete(self, obj: dict[str, Any]) -> None:
        raise AssertionError("only adds")


async def test_probes_are_spread_bounded_and_report_what_broke() -> None:
    informer = Informer(cast(Client, None), Scope(CLUSTERS))
    names = [f"c{i:02d}" for i in range(40)]
    for name in names:
        informer.store.upsert(cluster(name))
    informer.store.upsert(cluster("not-ready", ready=False))
    informer.store.upsert(cluster("on-kube", runtime="kubernetes"))
    informer.synced.set()
    dead = ComponentHealth(False, None, "gone", "p", NOT_RUNNING)
    sick = ComponentHealth(False, "v1", "fails /healthz", "p", UNHEALTHY)
    runtime = Runtime({"c03": dead, "c07": sick})
    options = ClusterOptions(probe_interval=0.4, probe_concurrency=3, probe_failure_threshold=3)
    monitor = ProbeMonitor(informer, {"process": runtime}, options)
    enqueued = Enqueued()
    monitor.add_handler(enqueued)
    loop = asyncio.get_running_loop()
    began = loop.time()
    task = asyncio.create_task(monitor.start())
    await asyncio.wait_for(enqueued.first.wait(), 5)
    assert enqueued.names == ["c03"], "a dead process is reported at its first probe"
    assert loop.time() - began < options.probe_interval * 2
    await asyncio.sleep(1.2)  # three rounds more
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    first_round = sorted(times[0] - began for times in runtime.started.values())
    assert set(runtime.started) == set(names), "Ready process clusters only, each of them"
    assert runtime.most <= 3, "never more than probe_concurrency at once"
    assert first_round[-1] - first_round[0] > 0.2, f"spread over the interval: {first_round}"
    assert "c07" in enqueued.names, "reported after three failed probes in a row"
    assert set(enqueued.names) == {"c03", "c07"}
