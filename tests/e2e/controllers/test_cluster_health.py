"""A Ready business control plane kept healthy: components killed with SIGKILL are noticed
within seconds, named in the Cluster's status and restarted (process runtime); a component
that dies at every start spends its restart budget and turns the Cluster Degraded, and the
spent budget survives the operator's own SIGKILL. The Cluster-Operator runs as a process of
its own (``kokpit operator cluster``, see :mod:`tests.e2e.operators`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.business import stop_control_planes
from kokpit.api.v1alpha1 import CLUSTER_PACKAGE_VERSIONS as PACKAGE_VERSIONS
from kokpit.api.v1alpha1 import CLUSTERS
from kokpit.local import Kubectl, LocalCluster
from kokpit.local.components import Layout
from kokpit.local.supervisor import Supervisor
from kokpit.local.versions import Release
from kokpit.providers.controlplane import ORDER
from kokpit.providers.controlplane.releases import cluster_package
from kokpit.runtime import Client, ClientConfig, NotFound
from kokpit.runtime.resources import EVENTS, PODS
from tests.e2e.operators import OperatorProcess, operator_process, write_kubeconfig
from tests.e2e.rbac import operator_identity
from tests.e2e.support import until

pytestmark = pytest.mark.usefixtures("kokpit_crds")

#: "Within seconds": from the SIGKILL to the Cluster saying which component is down.
DETECTION_LIMIT_S = 10.0


@pytest.fixture
def identity(local_cluster: LocalCluster, kubectl: Kubectl, namespace: str) -> ClientConfig:
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    return operator_identity(kubectl, admin, "cluster-operator", [namespace])


@contextlib.contextmanager
def stopping_control_planes(root: Path) -> Iterator[None]:
    try:
        yield
    finally:
        stop_control_planes(root)  # whatever a failed test left running


async def start_operator(
    identity: ClientConfig, tmp_path: Path, args: list[str], runtimes: str = "process"
) -> AsyncIterator[OperatorProcess]:
    root = tmp_path / "cp"
    kubeconfig = write_kubeconfig(identity, tmp_path / "cluster-operator.kubeconfig")
    all_args = ["--runtimes", runtimes, "--process-root", str(root), *args]
    with (
        stopping_control_planes(root),
        operator_process("cluster", kubeconfig, tmp_path / "op.log", all_args) as op,
    ):
        await op.start()
        yield op


@pytest.fixture
async def operator(identity: ClientConfig, tmp_path: Path) -> AsyncIterator[OperatorProcess]:
    """The Cluster-Operator with its default restart budget (5 restarts in 600 s)."""
    async for op in start_operator(identity, tmp_path, []):
        yield op


@pytest.fixture
async def thrifty_operator(
    identity: ClientConfig, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    """The Cluster-Operator with a small restart budget: 2 restarts in 30 s."""
    async for op in start_operator(
        identity, tmp_path, ["--restart-budget", "2", "--restart-window", "30"]
    ):
        yield op


@pytest.fixture
async def kube_operator(identity: ClientConfig, tmp_path: Path) -> AsyncIterator[OperatorProcess]:
    """The Cluster-Operator with the kubernetes runtime only (its default)."""
    async for op in start_operator(identity, tmp_path, [], runtimes="kubernetes"):
        yield op


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        (c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {}
    )
    return found


def component(obj: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        (c for c in obj.get("status", {}).get("components", []) if c["name"] == name), {}
    )
    return found


def ready(obj: dict[str, Any]) -> bool:
    return cond(obj, "Ready").get("status") == "True"


async def create_cluster(
    client: Client, namespace: str, name: str, runtime: str = "process"
) -> str:
    """A Cluster of ``runtime``; returns its package version's name."""
    package = f"{name}-{secrets.token_hex(3)}"
    await client.create(PACKAGE_VERSIONS, cluster_package(package, Release("v1.36.3")))
    await client.create(
        CLUSTERS,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"packageVersion": package, "runtime": runtime},
        },
    )
    return package


class Watcher:
    """Reads the Cluster and its control plane's state file, for :meth:`OperatorProcess.wait`."""

    def __init__(self, client: Client, namespace: str, name: str, root: Path) -> None:
        self.client, self.namespace, self.name, self.root = client, namespace, name, root
        self.obj: dict[str, Any] = {}

    async def cluster(self) -> dict[str, Any]:
        with contextlib.suppress(NotFound):
            self.obj = await self.client.get(CLUSTERS, self.name, namespace=self.namespace)
        return self.obj

    def supervisor(self) -> Supervisor:
        return Supervisor(Layout(self.root / self.obj["metadata"]["uid"]))

    def pid(self, name: str) -> int | None:
        entry = self.supervisor().state().get("processes", {}).get(name)
        return None if entry is None else int(entry["pid"])

    async def events(self, reason: str) -> list[str]:
        items = (await self.client.list(EVENTS, namespace=self.namespace)).items
        return [e["note"] for e in items if e["reason"] == reason]

    async def recorded(self, reason: str, starting: str = "") -> list[str]:
        """The notes of the Events of ``reason``, once one of them starts with ``starting``:
        Events are recorded after the status a test waited for."""

        async def found() -> list[str] | None:
            notes = await self.events(reason)
            return notes if any(n.startswith(starting) for n in notes) else None

        return await until(f"a {reason} Event {starting}", found, 10)


@pytest.mark.slow  # about 90 s
async def test_each_component_killed_is_noticed_within_seconds_and_restarted(
    client: Client, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    op = operator
    package = await create_cluster(client, namespace, "heal")
    watch = Watcher(client, namespace, "heal", tmp_path / "cp")

    async def ready_now() -> dict[str, Any] | None:
        obj = await watch.cluster()
        return obj if ready(obj) else None

    await op.wait(ready_now, "the Cluster to be Ready", 180)
    timings: dict[str, tuple[float, float, float]] = {}
    for name in ORDER:
        await op.wait(ready_now, f"the Cluster to be Ready before killing {name}", 120)
        pid = watch.pid(name)
        assert pid is not None
        before = len(component(watch.obj, name).get("restarts") or [])
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()

        async def reported(name: str = name) -> dict[str, Any] | None:
            obj = await watch.cluster()
            entry = component(obj, name)
            return obj if entry and not entry["ready"] and not ready(obj) else None

        obj = await op.wait(reported, f"the Cluster to report {name} down", 60)
        detected = time.monotonic() - killed
        entry = component(obj, name)
        # Seen dead, or (when this look came after its restart) starting again.
        assert entry["reason"] in ("NotRunning", "Unhealthy"), entry
        assert name in entry["message"]
        assert cond(obj, "Ready")["reason"] == "ComponentsNotReady"
        assert f"{name}: {name} " in cond(obj, "Ready")["message"]

        async def restarted(name: str = name, pid: int = pid) -> bool:
            new = watch.pid(name)
            return new is not None and new != pid

        await op.wait(restarted, f"{name} to be restarted", 60)
        started = time.monotonic() - killed
        obj = await op.wait(ready_now, f"the Cluster to be Ready again after {name}", 120)
        timings[name] = (detected, started, time.monotonic() - killed)
        # Counted once (others may have been restarted too: a scheduler whose API server was
        # down long enough exits when it loses its leader lease).
        assert len(component(obj, name)["restarts"]) == before + 1, component(obj, name)
        assert cond(obj, "Degraded")["status"] == "False"
        await watch.recorded("ComponentRestarted", f"{name}: {name} is not running; restart ")
    report = ", ".join(
        f"{n}: detected {d:.1f} s, restarted {s:.1f} s, Ready {r:.1f} s"
        for n, (d, s, r) in timings.items()
    )
    print(f"\nkill -9 → {report}")
    slow = {n: t[0] for n, t in timings.items() if t[0] > DETECTION_LIMIT_S}
    assert not slow, f"noticed too late: {report}"
    steps = await watch.events("StepStarted")
    assert len(steps) == len(ORDER), f"a repair is not a step: {steps}"
    await client.delete(CLUSTERS, "heal", namespace=namespace)
    await op.wait(lambda: gone(client, namespace, "heal"), "the Cluster to be deleted", 60)
    await client.delete(PACKAGE_VERSIONS, package)


async def gone(client: Client, namespace: str, name: str) -> bool:
    try:
        await client.get(CLUSTERS, name, namespace=namespace)
    except NotFound:
        return True
    return False


@contextlib.contextmanager
def occupied(port: int) -> Iterator[None]:
    """Listen on 127.0.0.1:``port``, so that a component that binds it fails to start."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:
            try:
                s.bind(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        s.listen()
        yield


@pytest.mark.slow  # about 90 s
async def test_a_component_dying_at_every_start_spends_its_budget_even_across_operator_crashes(
    client: Client, namespace: str, thrifty_operator: OperatorProcess, tmp_path: Path
) -> None:
    op = thrifty_operator
    package = await create_cluster(client, namespace, "flaky")
    watch = Watcher(client, namespace, "flaky", tmp_path / "cp")

    async def ready_now() -> dict[str, Any] | None:
        obj = await watch.cluster()
        return obj if ready(obj) else None

    await op.wait(ready_now, "the Cluster to be Ready", 180)
    port = watch.supervisor().state()["ports"]["scheduler"]
    pid = watch.pid("kube-scheduler")
    assert pid is not None
    # The scheduler dies, and its port is taken: every restart exits at once.
    os.kill(pid, signal.SIGKILL)
    with occupied(port):

        async def degraded() -> dict[str, Any] | None:
            obj = await watch.cluster()
            return obj if cond(obj, "Degraded").get("status") == "True" else None

        obj = await op.wait(degraded, "the budget to be spent", 90)
        spent_at = time.monotonic()
        assert cond(obj, "Degraded")["reason"] == "RestartBudgetExhausted"
        assert "kube-scheduler" in cond(obj, "Degraded")["message"]
        assert cond(obj, "Ready")["status"] == "False"
        entry = component(obj, "kube-scheduler")
        assert len(entry["restarts"]) == 2, entry
        assert "restart budget spent" in entry["message"]
        events = await watch.recorded("RestartBudgetExhausted")
        assert len(events) == 1, events
        assert "kube-scheduler" in events[0]
        last = watch.pid("kube-scheduler")

        # The operator crashes and a fresh one starts: the budget stays spent.
        op.kill()
        await op.start()
        await asyncio.sleep(max(0.0, 8 - (time.monotonic() - spent_at)))
        obj = await watch.cluster()
        assert watch.pid("kube-scheduler") == last, "no restart once the budget is spent"
        assert len(component(obj, "kube-scheduler")["restarts"]) == 2
        assert cond(obj, "Degraded")["status"] == "True"
        assert len(await watch.events("RestartBudgetExhausted")) == 1

    # The port is free again: once the window has passed, a restart is allowed, and works.
    obj = await op.wait(ready_now, "the Cluster to be Ready after the window", 90)
    assert cond(obj, "Degraded")["status"] == "False"
    assert watch.pid("kube-scheduler") != last
    await client.delete(CLUSTERS, "flaky", namespace=namespace)
    await op.wait(lambda: gone(client, namespace, "flaky"), "the Cluster to be deleted", 60)
    await client.delete(PACKAGE_VERSIONS, package)


def scheduler_pod(kubectl: Kubectl, namespace: str, cluster: str) -> dict[str, Any]:
    selector = f"kokpit.io/cluster={cluster},kokpit.io/component=kube-scheduler"
    (pod,) = kubectl.get("pods", "-n", namespace, "-l", selector)["items"]
    found: dict[str, Any] = pod
    return found


def pod_status(pod: dict[str, Any], *, crash_looping: bool) -> dict[str, Any]:
    """``pod``'s status as a kubelet reports a container that crashes (or runs again): on KWOK
    nodes nothing runs, so the test writes what a kubelet would."""
    status = pod["status"]
    ready = "False" if crash_looping else "True"
    conditions = [
        {**c, "status": ready} if c["type"] in ("Ready", "ContainersReady") else c
        for c in status["conditions"]
    ]
    container = dict(status["containerStatuses"][0])
    if crash_looping:
        container |= {
            "ready": False,
            "restartCount": 5,
            "state": {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": "back-off 2m40s restarting failed container=kube-scheduler",
                }
            },
        }
    else:
        container |= {"ready": True, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
    return {"status": {"conditions": conditions, "containerStatuses": [container]}}


@pytest.mark.usefixtures("shared_nodes")
async def test_a_kube_on_kube_component_going_unready_is_reported_at_once(
    client: Client, kubectl: Kubectl, namespace: str, kube_operator: OperatorProcess
) -> None:
    """The kubernetes runtime: the operator watches the Cluster's workloads (with the RBAC of
    config/rbac), so a pod going unready re-reconciles the Cluster at once (not at its resync,
    minutes away); a container in CrashLoopBackOff turns it Degraded, naming the pod; and it
    recovers with the pod."""
    op = kube_operator
    package = await create_cluster(client, namespace, "kok", runtime="kubernetes")
    watch = Watcher(client, namespace, "kok", Path("/nonexistent"))

    async def ready_now() -> dict[str, Any] | None:
        obj = await watch.cluster()
        return obj if ready(obj) else None

    await op.wait(ready_now, "the Cluster to be Ready", 120)
    pod = scheduler_pod(kubectl, namespace, "kok")
    await client.patch(
        PODS,
        pod["metadata"]["name"],
        pod_status(pod, crash_looping=True),
        namespace=namespace,
        subresource="status",
    )
    changed = time.monotonic()

    async def degraded() -> dict[str, Any] | None:
        obj = await watch.cluster()
        return obj if cond(obj, "Degraded").get("status") == "True" else None

    obj = await op.wait(degraded, "the Cluster to be Degraded", 30)
    print(f"\nunready pod → Cluster Degraded in {time.monotonic() - changed:.1f} s")
    assert cond(obj, "Degraded")["reason"] == "CrashLoopBackOff"
    assert pod["metadata"]["name"] in cond(obj, "Degraded")["message"]
    assert cond(obj, "Ready")["status"] == "False"
    assert cond(obj, "Ready")["reason"] == "ComponentsNotReady"
    assert "kube-scheduler: 0/1 replicas ready" in cond(obj, "Ready")["message"]
    entry = component(obj, "kube-scheduler")
    assert entry["reason"] == "CrashLoopBackOff"
    assert "restarts" not in entry, "kokpit restarts nothing of the kubernetes runtime"
    assert component(obj, "etcd")["ready"] is True
    assert len(await watch.recorded("CrashLoopBackOff")) == 1

    await client.patch(
        PODS,
        pod["metadata"]["name"],
        pod_status(scheduler_pod(kubectl, namespace, "kok"), crash_looping=False),
        namespace=namespace,
        subresource="status",
    )
    obj = await op.wait(ready_now, "the Cluster to be Ready again", 30)
    assert cond(obj, "Degraded")["status"] == "False"
    await client.delete(CLUSTERS, "kok", namespace=namespace)
    await op.wait(lambda: gone(client, namespace, "kok"), "the Cluster to be deleted", 60)
    await client.delete(PACKAGE_VERSIONS, package)
