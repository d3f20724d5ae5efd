"""The local meta-cluster is a real control plane: the scheduler, the controller-manager's
controllers and kwok's simulated kubelets all do their jobs."""

from __future__ import annotations

import collections
import json
import secrets
from datetime import UTC, datetime
from typing import Any

from kokpit.local import Kubectl
from kokpit.local import nodes as kwok_nodes
from kokpit.local.components import KWOK_NODE_ANNOTATION
from kokpit.local.workloads import deployment
from tests.e2e.conftest import SHARED_NODES
from tests.e2e.support import condition, eventually, taint_keys


def test_100_kwok_nodes_become_ready(kubectl: Kubectl, shared_nodes: list[str]) -> None:
    nodes = kubectl.get("nodes", "-l", f"{kwok_nodes.SIMULATED_LABEL}=true")["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert set(shared_nodes) <= by_name.keys()
    assert len(shared_nodes) == SHARED_NODES
    for name in shared_nodes:
        node = by_name[name]
        ready = condition(node, "Ready")
        assert ready is not None, name
        assert ready["status"] == "True", name
        # kwok, not a test shortcut, filled in what a kubelet would report
        assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("kwok-"), name


def test_200_replicas_run_on_kwok_nodes(
    kubectl: Kubectl, namespace: str, shared_nodes: list[str]
) -> None:
    kubectl.apply([deployment(namespace, "web", 200)])
    kubectl.run(
        "rollout", "status", "-n", namespace, "deployment/web", "--timeout=300s", timeout=330
    )
    pods = kubectl.get("pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 200
    assert all(p["status"]["phase"] == "Running" for p in pods)
    placed = collections.Counter(p["spec"]["nodeName"] for p in pods)
    assert set(placed) <= set(shared_nodes), "the scheduler bound every pod to a kwok node"
    # Spreading is a soft preference of the default scheduler profile (run alone, 200 pods
    # landed on 48 of 100 nodes): spread, not packed onto a few.
    assert len(placed) > SHARED_NODES // 4, f"the scheduler spreads pods: {placed}"
    owners = {p["metadata"]["ownerReferences"][0]["kind"] for p in pods}
    assert owners == {"ReplicaSet"}, "the deployment and replicaset controllers made them"


def test_node_without_heartbeat_is_marked_unknown_and_tainted(kubectl: Kubectl) -> None:
    # A kubelet that registered, reported Ready once, and then went silent: the node is not
    # kwok's (kwok v0.8.0 keeps renewing the Lease of a node whose annotation is removed, so
    # that cannot stop a heartbeat), and nothing renews its Lease or status afterwards. Only the
    # controller-manager's node lifecycle controller acts on it.
    name = f"silent-{secrets.token_hex(3)}"
    manifest = kwok_nodes.node(name)
    del manifest["metadata"]["annotations"][KWOK_NODE_ANNOTATION]
    del manifest["status"]
    kubectl.apply([manifest])
    try:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        kubectl.run(
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"conditions": [ready]}}),
        )

        def unreachable() -> dict[str, Any] | None:
            node = kubectl.get("node", name)
            ready = condition(node, "Ready")
            gone = ready is not None and ready["status"] == "Unknown"
            return node if gone and "node.kubernetes.io/unreachable" in taint_keys(node) else None

        node = eventually(unreachable, timeout=90, interval=1, what=f"{name} to be unreachable")
        assert condition(node, "Ready")["reason"] == "NodeStatusUnknown"  # type: ignore[index]
    finally:
        kubectl.run("delete", "node", name, "--ignore-not-found")


def test_kwok_chaos_stage_makes_a_node_not_ready(kubectl: Kubectl) -> None:
    (name,) = kwok_nodes.ensure_nodes(kubectl, 1, prefix="chaos")
    try:
        kwok_nodes.wait_ready(kubectl, [name], timeout_s=60)
        kubectl.run("label", "node", name, "node-not-ready.stage.kwok.x-k8s.io=true")

        def not_ready() -> dict[str, Any] | None:
            node = kubectl.get("node", name)
            ready = condition(node, "Ready")
            bad = ready is not None and ready["status"] == "False"
            return node if bad and "node.kubernetes.io/not-ready" in taint_keys(node) else None

        eventually(not_ready, timeout=60, interval=1, what=f"{name} to be NotReady and tainted")
    finally:
        kubectl.run("delete", "node", name, "--ignore-not-found")


def test_deleting_a_namespace_removes_what_was_in_it(
    kubectl: Kubectl, shared_nodes: list[str]
) -> None:
    ns = "doomed"
    kubectl.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}])
    kubectl.apply(
        [
            deployment(ns, "worker", 5),
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "cfg", "namespace": ns},
                "data": {"k": "v"},
            },
        ]
    )
    kubectl.run("rollout", "status", "-n", ns, "deployment/worker", "--timeout=120s")
    assert len(kubectl.get("pods", "-n", ns)["items"]) == 5

    kubectl.run("delete", "namespace", ns, "--timeout=120s", timeout=150)

    gone = kubectl.run("get", "namespace", ns, "--ignore-not-found", "-o", "name")
    assert gone == ""
    leftovers = kubectl.get(
        "pods,replicasets,configmaps", "-A", "--field-selector", f"metadata.namespace={ns}"
    )["items"]
    assert leftovers == []


def test_garbage_collector_removes_dependents(
    kubectl: Kubectl, namespace: str, shared_nodes: list[str]
) -> None:
    kubectl.apply([deployment(namespace, "owned", 3)])
    kubectl.run("rollout", "status", "-n", namespace, "deployment/owned", "--timeout=120s")
    kubectl.run("delete", "deployment", "-n", namespace, "owned", "--cascade=background")

    def all_gone() -> bool:
        left = kubectl.get("replicasets,pods", "-n", namespace, "-l", "app=owned")["items"]
        return not left

    eventually(all_gone, timeout=60, what="replicasets and pods to be garbage collected")
