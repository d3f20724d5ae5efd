"""The kubelet of a simulated host, played by KWOK.

On a real host the kubelet package starts a kubelet that joins by TLS bootstrap, with the
bootstrap kubeconfig the Machine-Operator wrote (:mod:`kokpit.controllers.machine.join`), and
registers its own Node (with ``--register-with-taints``). A simulated host has no kubelet,
so the Machine-Operator registers the Node the way that kubelet would, annotated for KWOK,
which then plays the kubelet from there: status, heartbeats (Lease), and the pods bound to
the node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kokpit.local.components import KWOK_NODE_ANNOTATION
from kokpit.local.nodes import CAPACITY
from kokpit.runtime import AlreadyExists, Client, NotFound
from kokpit.runtime.resources import NODES

#: On every Node a Machine registered: the Machine's namespace/name.
MACHINE_ANNOTATION = "kokpit.io/machine"


@dataclass(frozen=True)
class Registration:
    name: str
    machine: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()


class NodeTaken(Exception):
    """A Node of that name exists and is not this Machine's: kokpit leaves it alone."""


class NodeNotRegistered(Exception):
    """The host's own kubelet has not registered its Node yet."""


class NodeRegistrar(Protocol):
    """How a Machine's Node comes to be in its business cluster: a choice of the executor.
    KWOK registers simulated hosts' nodes; a real host's kubelet registers its own."""

    async def register(self, client: Client, node: Registration) -> dict[str, Any]: ...


def owned_by(node: Mapping[str, Any], machine: str) -> bool:
    """The Node was registered for Machine ``machine`` (namespace/name): only such a Node is
    gated, drained and deleted by kokpit."""
    annotations = node.get("metadata", {}).get("annotations") or {}
    return bool(annotations.get(MACHINE_ANNOTATION) == machine)


class HostKubelet:
    """A real host's Node comes from its own kubelet (installed by the Machine's package
    version, registering with ``--register-with-taints``): kokpit waits for it, and adopts it
    once it carries the Machine's address, by annotating it as the Machine's."""

    async def register(self, client: Client, node: Registration) -> dict[str, Any]:
        try:
            found = await client.get(NODES, node.name)
        except NotFound:
            raise NodeNotRegistered(
                f"waiting for the kubelet on {node.address} to register Node {node.name}"
            ) from None
        if owned_by(found, node.machine):
            return found
        addresses = (found.get("status") or {}).get("addresses") or []
        if not any(a.get("address") == node.address for a in addresses):
            raise NodeTaken(
                f"Node {node.name} does not report the Machine's address {node.address}; "
                f"kokpit will not adopt, drain or delete it"
            )
        patch = {
            "metadata": {
                "resourceVersion": found["metadata"]["resourceVersion"],
                "annotations": {MACHINE_ANNOTATION: node.machine},
                "labels": dict(node.labels),
            }
        }
        adopted: dict[str, Any] = await client.patch(NODES, node.name, patch)
        return adopted


class KwokKubelet:
    async def register(self, client: Client, node: Registration) -> dict[str, Any]:
        """Create the Node. One that exists already is kept if it is this Machine's
        (registering twice is fine) and refused with :class:`NodeTaken` if it is not."""
        obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node.name,
                "annotations": {KWOK_NODE_ANNOTATION: "fake", MACHINE_ANNOTATION: node.machine},
                "labels": {
                    "kubernetes.io/hostname": node.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    **node.labels,
                },
            },
            "spec": {"taints": [dict(t) for t in node.taints]},
            "status": {
                "capacity": CAPACITY,
                "allocatable": CAPACITY,
                "addresses": [{"type": "InternalIP", "address": node.address}],
            },
        }
        try:
            return await client.create(NODES, obj)
        except AlreadyExists:
            existing = await client.get(NODES, node.name)
            if not owned_by(existing, node.machine):
                raise NodeTaken(
                    f"a Node named {node.name} exists in the business cluster and was not "
                    f"registered for this Machine; kokpit will not adopt, drain or delete it"
                ) from None
            return existing
