"""The business-cluster part of ``kokpit demo``: the Cluster-Operator, running in a thread of
the demo, creates a real business control plane (process runtime), upgrades it, and rolls back
a broken package version by itself. The Machine-Operator runs beside it, in the same manager,
for the machines part (:mod:`.demo_machines`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from kokpit.api.schema import crd
from kokpit.api.v1alpha1 import CLUSTERS, KINDS
from kokpit.controllers import machine, rollout
from kokpit.controllers.cluster import ClusterOptions, setup
from kokpit.local import Kubectl, LocalCluster, component_images, realnode
from kokpit.local.assets import find
from kokpit.local.versions import RELEASES
from kokpit.providers.controlplane import ControlPlaneRuntime
from kokpit.providers.controlplane.kubernetes import KubernetesRuntime, KubernetesRuntimeOptions
from kokpit.providers.controlplane.process import ProcessRuntime
from kokpit.providers.controlplane.releases import cluster_package
from kokpit.providers.machine import Executor
from kokpit.providers.machine.sim import SimExecutor
from kokpit.providers.machine.ssh import SSHExecutor
from kokpit.runtime import Client, ClientConfig, EventRecorder, Manager, ManagerOptions, NotFound
from kokpit.runtime.resources import SECRETS

NAMESPACE = "kokpit-demo"
NAME = "team-a"


class OperatorThread:
    """The Cluster-Operator on an event loop of its own, beside the (synchronous) demo. With
    ``real_nodes``, it has the ``kubernetes`` runtime too, placing control planes on the real
    nodes with the images ``local up`` imported there."""

    def __init__(self, kubeconfig: Path, root: Path, *, real_nodes: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.kubeconfig, self.root, self.real_nodes = kubeconfig, root, real_nodes
        self.task: asyncio.Task[None] | None = None
        self.client: Client | None = None
        self.machines: machine.MachineOperator | None = None
        self.executors: dict[str, Executor] = {}
        self.recorders: list[EventRecorder] = []

    def meta(self) -> Client:
        """The meta-cluster client the operators' thread uses (once it has started)."""
        if self.client is None:
            raise RuntimeError("the operators have not started")
        return self.client

    def start(self) -> None:
        self.thread.start()
        self.call(self._start)

    async def _start(self) -> None:
        self.client = Client(ClientConfig.from_kubeconfig(self.kubeconfig))
        manager = Manager(self.client, ManagerOptions(health_port=None))
        recorder = EventRecorder(self.client, "kokpit.io/cluster-operator", "demo")
        self.recorders.append(recorder)
        runtimes: dict[str, ControlPlaneRuntime] = {"process": ProcessRuntime(self.root)}
        if self.real_nodes:
            runtimes["kubernetes"] = KubernetesRuntime(
                self.client,
                KubernetesRuntimeOptions(
                    node_selector={realnode.LABEL: "true"},
                    image_repository=component_images.REPOSITORY,
                ),
            )
        setup(manager, runtimes, recorder, ClusterOptions(poll_interval=0.5))
        machines = EventRecorder(self.client, "kokpit.io/machine-operator", "demo")
        self.recorders.append(machines)
        # KWOK plays the kubelets of the ``sim`` hosts; an ``ssh`` host runs its own.
        self.executors = {"sim": SimExecutor(latency=0.3), "ssh": SSHExecutor()}
        self.machines = machine.setup(manager, self.executors, machines)
        rollouts = EventRecorder(self.client, "kokpit.io/rollout-operator", "demo")
        self.recorders.append(rollouts)
        rollout.setup(manager, rollouts, options=rollout.RolloutOptions(poll_interval=1))
        self.task = asyncio.create_task(manager.start())

    def call(self, fn: Callable[[], Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(fn(), self.loop)
        return future.result()

    def stop(self) -> None:
        async def stop() -> None:
            if self.task is not None:
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.task
            if self.machines is not None:
                await self.machines.close()
            for executor in self.executors.values():
                await executor.close()
            for recorder in self.recorders:
                await recorder.close()
            if self.client is not None:
                await self.client.close()

        self.call(stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def wait_for(
    operator: OperatorThread,
    check: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 240,
    name: str = NAME,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:

        async def get() -> dict[str, Any]:
            return await operator.meta().get(CLUSTERS, name, namespace=NAMESPACE)

        obj = operator.call(get)
        if check(obj):
            return obj
        time.sleep(0.5)
    raise TimeoutError(f"business cluster {name} did not {what}: {json.dumps(obj.get('status'))}")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_]
    return found[0] if found else {}


def at(version: str) -> Callable[[dict[str, Any]], bool]:
    def check(obj: dict[str, Any]) -> bool:
        return bool(
            obj.get("status", {}).get("kubernetesVersion") == version
            and condition(obj, "Ready").get("status") == "True"
        )

    return check


def start_operators(cluster: LocalCluster, kubectl: Kubectl, *, real_nodes: bool) -> OperatorThread:
    """kokpit's CRDs, and the operators running, for the caller to stop (:func:`tear_down`)."""
    kubectl.apply([crd(kind) for kind in KINDS])
    kubectl.wait_established(*(f"{kind.plural}.{kind.group}" for kind in KINDS))
    operator = OperatorThread(
        cluster.kubeconfig, cluster.layout.root / "controlplanes", real_nodes=real_nodes
    )
    operator.start()
    return operator


def story(
    operator: OperatorThread, kubectl: Kubectl, root: Path, say: Callable[[str], None]
) -> Kubectl:
    """Walk through the Cluster-Operator; returns a kubectl for the business cluster."""
    new, old = RELEASES[0], RELEASES[1]
    start = old if find(old) is not None else new
    packages = [cluster_package(f"k8s-{start.version}", start, deadline_seconds=20)]
    if start is old:
        packages += [
            cluster_package(f"k8s-{new.version}", new, deadline_seconds=20),
            cluster_package(
                f"k8s-{new.version}-broken",
                new,
                deadline_seconds=20,
                apiserver_flags={"no-such-flag": "x"},
            ),
        ]
    replace_package_versions(kubectl, packages)
    kubectl.apply(
        [
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": NAME, "namespace": NAMESPACE},
                "spec": {"packageVersion": f"k8s-{start.version}", "runtime": "process"},
            }
        ]
    )
    say(f"   Cluster {NAMESPACE}/{NAME} → ClusterPackageVersion k8s-{start.version}")
    wait_for(operator, at(start.version), "become Ready")
    business = business_kubectl(operator, kubectl, root)
    say(
        f"   Ready: its API server answers {version(business)}; "
        f"kubectl --kubeconfig {business.kubeconfig} get ns"
    )
    if start is not old:
        say(
            f"   (build {old.version} with `kokpit local build --version {old.version}` to see "
            "an upgrade and an automatic rollback here)"
        )
        return business
    business.run("create", "configmap", "survivor", "--from-literal=hello=world")

    say("   Upgrade to a package whose kube-apiserver has a broken flag: the health check")
    patch(kubectl, f"k8s-{new.version}-broken")
    obj = wait_for(
        operator,
        lambda o: condition(o, "RolledBack").get("status") == "True" and at(old.version)(o),
        "roll back",
    )
    say(
        f"   fails and the operator rolls back by itself: {condition(obj, 'RolledBack')['message']}"
    )
    say(f"   Upgrade to k8s-{new.version}, component by component (etcd, kube-apiserver, ...)")
    patch(kubectl, f"k8s-{new.version}")
    wait_for(operator, at(new.version), "upgrade")
    data = business.get("configmap", "survivor")["data"]
    say(f"   Ready at {version(business)}; the data is still there: {data}")
    return business


def replace_package_versions(kubectl: Kubectl, objects: list[dict[str, Any]]) -> None:
    """Create the demo's package versions afresh: they are immutable, and the ones a previous
    run (of an older kokpit) left in the kept data may differ."""
    for obj in objects:
        kind, name = obj["kind"].lower(), obj["metadata"]["name"]
        kubectl.run("delete", kind, name, "--ignore-not-found", "--wait=true")
    kubectl.apply(objects)


def patch(kubectl: Kubectl, package_version: str) -> None:
    kubectl.run(
        "patch",
        "cluster",
        "-n",
        NAMESPACE,
        NAME,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"packageVersion": package_version}}),
    )


def business_kubectl(operator: OperatorThread, kubectl: Kubectl, root: Path) -> Kubectl:
    async def secret() -> dict[str, Any]:
        return await operator.meta().get(SECRETS, f"{NAME}-admin-kubeconfig", namespace=NAMESPACE)

    path = root / f"{NAME}.kubeconfig"
    path.touch(mode=0o600)
    path.write_bytes(base64.b64decode(operator.call(secret)["data"]["value"]))
    return Kubectl(kubectl.binary, path)


def version(business: Kubectl) -> str:
    return str(json.loads(business.run("get", "--raw", "/version"))["gitVersion"])


def tear_down(operator: OperatorThread) -> None:
    """Delete the business clusters through the operator (its finalizer stops the processes,
    or deletes the pods), then stop it."""

    async def delete() -> None:  # not with kubectl: see demo_machines.tear_down
        for item in (await operator.meta().list(CLUSTERS, namespace=NAMESPACE)).items:
            with contextlib.suppress(NotFound):
                await operator.meta().delete(
                    CLUSTERS, item["metadata"]["name"], namespace=NAMESPACE
                )

    operator.call(delete)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:

        async def gone() -> bool:
            return not (await operator.meta().list(CLUSTERS, namespace=NAMESPACE)).items

        if operator.call(gone):
            break
        time.sleep(0.5)
    operator.stop()
