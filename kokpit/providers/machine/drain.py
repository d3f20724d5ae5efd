"""Taking a Node's pods off it, the parts every drain shares: which pods stay, cordoning, and
evicting one pod through the Eviction API (so PodDisruptionBudgets hold it back).

Used by the Machine-Operator (a deleted Machine's node) and the Remediation workflow (a faulty
node). Each decides for itself when to give up on a budget; nothing here forces a pod out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kokpit.runtime import Client, Conflict, NotFound, TooManyRequests
from kokpit.runtime.resources import NODES

Object = dict[str, Any]

#: How the Eviction API names a refusing budget in its answer's causes.
_BUDGET = re.compile(r"disruption budget (\S+?)(?: needs|\s|$)")


def stays(pod: Object) -> bool:
    """Pods a drain leaves: DaemonSet pods, static (mirror) pods, and finished pods that are
    not being deleted.

    A finished pod that is being deleted (an evicted pod whose process exited on SIGTERM) is
    waited for like a running one: its kubelet is still tearing it down (sandbox, network,
    volumes) and deletes the object when done. A drain that went on at once would let the
    Machine's delete remove the kubelet mid-teardown and leave the pod behind.
    """
    meta = pod["metadata"]
    if any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or []):
        return True
    if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
        return True
    finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
    return finished and not meta.get("deletionTimestamp")


async def set_unschedulable(client: Client, node: Object, unschedulable: bool) -> bool:
    """Cordon (or uncordon) ``node``; returns whether it changed anything."""
    if bool((node.get("spec") or {}).get("unschedulable")) == unschedulable:
        return False
    name = node["metadata"]["name"]
    await client.patch(NODES, name, {"spec": {"unschedulable": unschedulable or None}})
    return True


@dataclass(frozen=True)
class Refused:
    """An eviction a budget (or the API server's throttling) refused for now."""

    pod: str
    #: The refusing PodDisruptionBudget as namespace/name, when the answer names it.
    budget: str | None
    message: str


async def evict(client: Client, pod: Object) -> Refused | None:
    """Ask the Eviction API to evict ``pod``; None when it was evicted (or is gone already)."""
    meta = pod["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        await client.evict(namespace, name)
    except TooManyRequests as e:
        budget = next(
            (
                f"{namespace}/{m.group(1)}"
                for cause in e.causes
                if (m := _BUDGET.search(str(cause.get("message", ""))))
            ),
            None,
        )
        return Refused(f"{namespace}/{name}", budget, str(e))
    except (NotFound, Conflict):
        pass
    return None
