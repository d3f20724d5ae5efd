"""The kubelet of a simulated host, played by KWOK.

On a real host the kubelet package starts a kubelet that registers its own Node (with
``--register-with-taints``). A simulated host has no kubelet, so the Machine-Operator registers
the Node the way that kubelet would, annotated for KWOK, which then plays the kubelet from
there: status, heartbeats (Lease), and the pods bound to the node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kokpit.local.components import KWOK_NODE_ANNOTATION
from kokpit.local.nodes import CAPACITY
from kokpit.runtime import AlreadyExists, Client
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


class KwokKubelet:
    async def register(self, client: Client, node: Registration) -> dict[str, Any]:
        """Create the Node (a Node that exists already is kept: registering twice is fine)."""
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
            return await client.get(NODES, node.name)
