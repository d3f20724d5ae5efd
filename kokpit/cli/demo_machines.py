"""The machines part of ``kokpit demo``: the Machine-Operator installs the packages of three
simulated hosts, joins them to the business cluster as nodes (KWOK plays their kubelets), and
keeps them unschedulable until a network operator — played here by the demo — reports them
ready in their Condition ConfigMaps, as a ServiceAccount that only the admission policy of
``config/admission`` lets write its own report."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kokpit.api.v1alpha1 import MACHINES
from kokpit.cli.demo_business import OperatorThread, replace_package_versions
from kokpit.local import Assets, Kubectl
from kokpit.local.nodes import start_kwok
from kokpit.runtime import Client, ClientConfig, NotFound
from kokpit.runtime.resources import CONFIGMAPS

NAMESPACE = "kokpit-demo"
GATE = "example.com/NetworkReady"
HOSTS = ("host-1", "host-2", "host-3")
#: The ServiceAccount the demo's network operator reports as (it owns the gate).
REPORTER = "network-operator"
CONFIG = Path(__file__).resolve().parents[2] / "config"


def script_package(name: str, kind: str, version: str) -> dict[str, Any]:
    state = f'"$KOKPIT_ROOT/var/lib/kokpit/{name}"'
    return {
        "name": name,
        "kind": kind,
        "version": version,
        "install": {
            "script": {
                "check": {"run": f"cat {state} 2>/dev/null || true"},
                "install": {"run": f'mkdir -p "$(dirname {state})" && echo {version} > {state}'},
                "remove": {"run": f"rm -f {state}"},
            }
        },
    }


def story(
    kubectl: Kubectl,
    business: Kubectl,
    assets: Assets,
    workdir: Path,
    cluster: str,
    say: Callable[[str], None],
) -> subprocess.Popen[bytes]:
    """Walk through the Machine-Operator; returns the business cluster's KWOK, for the caller
    to stop after :func:`tear_down`."""
    kwok = start_kwok(assets, business.kubeconfig, workdir)
    reporter = network_operator(kubectl)
    package_version = {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "MachinePackageVersion",
        "metadata": {"name": "hosts-v1"},
        "spec": {
            "packages": [
                script_package("sysctl", "SystemConfig", "1"),
                script_package("containerd", "ContainerRuntime", "2.0.5"),
                script_package("kubelet", "Kubelet", "1.36.3"),
            ]
        },
    }
    replace_package_versions(kubectl, [package_version])
    kubectl.apply([machine(name, cluster) for name in HOSTS])
    say(f"   {len(HOSTS)} Machines (simulated hosts) → MachinePackageVersion hosts-v1")
    machines = wait(kubectl, lambda ms: all(m.get("status", {}).get("nodeName") for m in ms))
    nodes = business.get("nodes")["items"]
    tainted = [n["metadata"]["name"] for n in nodes if _tainted(n)]
    say(
        f"   packages installed, {len(machines)} nodes joined the business cluster, "
        f"{len(tainted)} held unschedulable (taint kokpit.io/not-ready: {GATE} not reported)"
    )
    asyncio.run(report_ready(reporter))
    say(
        f"   the network operator (ServiceAccount {NAMESPACE}/{REPORTER}) reports {GATE}=True "
        f"in each node's Condition ConfigMap, under its own key {NAMESPACE}.{REPORTER}"
    )
    wait(kubectl, lambda ms: all(_ready(m) for m in ms))
    nodes = business.get("nodes")["items"]
    free = [n["metadata"]["name"] for n in nodes if not _tainted(n)]
    say(f"   every gate passes: {len(free)} nodes schedulable; kubectl get machines -n {NAMESPACE}")
    roll_out(kubectl, package_version, say)
    return kwok


def roll_out(kubectl: Kubectl, current: dict[str, Any], say: Callable[[str], None]) -> None:
    """A gray-scale rollout of a new sysctl package to the hosts: a canary, then the rest."""
    newer = copy.deepcopy(current)
    newer["metadata"]["name"] = "hosts-v2"
    newer["spec"]["packages"][0] = script_package("sysctl", "SystemConfig", "2")
    replace_package_versions(kubectl, [newer])
    # Afresh: one a previous run left in the kept data has finished already.
    kubectl.run("delete", "rollout", "hosts-v2", "-n", NAMESPACE, "--ignore-not-found")
    kubectl.apply(
        [
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "Rollout",
                "metadata": {"name": "hosts-v2", "namespace": NAMESPACE},
                "spec": {
                    "target": {
                        "kind": "Machine",
                        "selector": {"matchLabels": {"kokpit.io/demo": "hosts"}},
                        "packageVersion": "hosts-v2",
                    },
                    "batches": [{"size": "1"}, {"size": "100%"}],
                },
            }
        ]
    )
    say("   Rollout hosts-v2: sysctl 1 → 2, a canary first, then the rest (kubectl get ro)")
    deadline = time.monotonic() + 120
    while (status := kubectl.get("rollout", "hosts-v2", "-n", NAMESPACE).get("status") or {}).get(
        "phase"
    ) not in ("Succeeded", "Aborted"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the rollout did not finish: {json.dumps(status)}")
        time.sleep(0.5)
    if status["phase"] != "Succeeded":
        raise RuntimeError(f"the rollout aborted: {status.get('abortReason')}")
    sizes = [b["changed"] for b in status["batches"]]
    say(f"   rolled out in batches of {sizes}: every host runs hosts-v2 and is Ready")


def machine(name: str, cluster: str) -> dict[str, Any]:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"kokpit.io/demo": "hosts"}},
        "spec": {
            "clusterRef": {"name": cluster},
            "executor": "sim",
            "address": "192.0.2.1",
            "packageVersion": "hosts-v1",
            "readinessGates": [
                {"conditionType": GATE, "reporter": {"namespace": NAMESPACE, "name": REPORTER}}
            ],
        },
    }


def network_operator(kubectl: Kubectl) -> ClientConfig:
    """Credentials of the network operator: its ServiceAccount, bound to the reporter role,
    with a short-lived token from the TokenRequest API; and the admission policy that keeps
    each reporter to its own key."""
    kubectl.run("apply", "-f", str(CONFIG / "admission" / "node-condition-reports.yaml"))
    kubectl.run("apply", "-f", str(CONFIG / "rbac" / "node-condition-reporter.yaml"))
    meta = {"name": REPORTER, "namespace": NAMESPACE}
    kubectl.apply(
        [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta,
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "kokpit-node-condition-reporter",
                },
                "subjects": [{"kind": "ServiceAccount", **meta}],
            },
        ]
    )
    token = kubectl.run("create", "token", "-n", NAMESPACE, REPORTER, "--duration=10m").strip()
    admin = ClientConfig.from_kubeconfig(kubectl.kubeconfig)
    return ClientConfig(server=admin.server, ca_data=admin.ca_data, token=token)


async def report_ready(config: ClientConfig, hosts: tuple[str, ...] = HOSTS) -> None:
    """The network operator reports each node ready, under its own key."""
    report = [{"type": GATE, "status": "True", "reason": "RoutesProgrammed", "message": ""}]
    async with Client(config) as client:
        for name in hosts:
            await client.patch(
                CONFIGMAPS,
                name,
                {"data": {f"{NAMESPACE}.{REPORTER}": json.dumps(report)}},
                namespace=NAMESPACE,
            )


def tear_down(operator: OperatorThread, timeout: float = 240) -> bool:
    """Delete the Machines (their finalizer drains and deletes the nodes, and removes a real
    host's packages: its kubelet and containerd); True once they are gone. Through the
    operators' client, not kubectl: kubectl (Go) would take a second Ctrl-C back from the
    ignored SIGINT the tear-down runs under, and leave a host's kubelet behind."""

    async def delete() -> None:
        for item in (await operator.meta().list(MACHINES, namespace=NAMESPACE)).items:
            with contextlib.suppress(NotFound):
                await operator.meta().delete(
                    MACHINES, item["metadata"]["name"], namespace=NAMESPACE
                )

    async def gone() -> bool:
        return not (await operator.meta().list(MACHINES, namespace=NAMESPACE)).items

    operator.call(delete)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if operator.call(gone):
            return True
        time.sleep(0.5)
    return False


def wait(
    kubectl: Kubectl, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 120
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        machines = kubectl.get("machines", "-n", NAMESPACE)["items"]
        if len(machines) == len(HOSTS) and check(machines):
            return list(machines)
        if time.monotonic() > deadline:
            status = {m["metadata"]["name"]: m.get("status") for m in machines}
            raise TimeoutError(f"the Machines did not get there: {json.dumps(status)}")
        time.sleep(0.5)


def _ready(machine: dict[str, Any]) -> bool:
    conditions = machine.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _tainted(node: dict[str, Any]) -> bool:
    return any(t["key"] == "kokpit.io/not-ready" for t in node["spec"].get("taints") or [])
